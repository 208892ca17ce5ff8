use kestrel_backend::cpu::quant::*;
use rand::{Rng, SeedableRng};
#[test]
fn measure() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for fmt in [WeightFormat::Q4_K, WeightFormat::Q5_K, WeightFormat::Q6_K, WeightFormat::Q4_0, WeightFormat::Q8_0] {
        for dist in 0..3 {
        let k = 256 * 64;
        let x: Vec<f32> = (0..k).map(|i| {
            let g: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
            match dist { 0 => g, 1 => g + 3.0, _ => if i % 97 == 0 { g * 20.0 } else { g } }
        }).collect();
        let mut b = vec![0u8; fmt.row_bytes(k)];
        quantize_row(fmt, &x, &mut b);
        let mut y = vec![0f32; k];
        dequantize_row(fmt, &b, &mut y);
        let mut worst = 0f32; let (mut se, mut sx) = (0f64, 0f64);
        for (xs, ys) in x.chunks(256).zip(y.chunks(256)) {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xs.iter().zip(ys) { worst = worst.max((a - b).abs() / amax); se += ((a-b) as f64).powi(2); sx += (*a as f64).powi(2); }
        }
        println!("{fmt:?} dist {dist}: max err / superblock amax = {worst:.4}, rel rms = {:.4}", (se/sx).sqrt());
        }
    }
}
