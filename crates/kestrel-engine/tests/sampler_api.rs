//! Sampler API behaviour that needs no statistics: validation messages, greedy ties, logprob
//! semantics, degenerate logits.

use kestrel_engine::sampler::{
    Sampler, SamplerScratch, SamplingError, SamplingParams, MIN_LOGPROB,
};

fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        ..SamplingParams::default()
    }
}

#[test]
fn validate_names_the_field() {
    let cases: [(SamplingParams, &str, &str); 9] = [
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
            "`top_p` must be in (0, 1], got 1.5",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
            "`top_p` must be in (0, 1], got 0",
        ),
        (
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
            "temperature",
            "`temperature` must be >= 0, got -0.1",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
            "`temperature` must be >= 0, got NaN",
        ),
        (
            SamplingParams {
                min_p: 1.1,
                ..Default::default()
            },
            "min_p",
            "`min_p` must be in [0, 1], got 1.1",
        ),
        (
            SamplingParams {
                presence_penalty: 2.5,
                ..Default::default()
            },
            "presence_penalty",
            "`presence_penalty` must be in [-2, 2], got 2.5",
        ),
        (
            SamplingParams {
                frequency_penalty: -3.0,
                ..Default::default()
            },
            "frequency_penalty",
            "`frequency_penalty` must be in [-2, 2], got -3",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
            "`repetition_penalty` must be > 0, got 0",
        ),
        (
            SamplingParams {
                logprobs: Some(21),
                ..Default::default()
            },
            "top_logprobs",
            "`top_logprobs` must be at most 20, got 21",
        ),
    ];
    for (p, param, message) in cases {
        assert_eq!(
            p.validate(),
            Err(SamplingError {
                param,
                message: message.to_owned()
            })
        );
    }
    let bias = SamplingParams {
        logit_bias: vec![(3, 150.0)],
        ..Default::default()
    };
    assert_eq!(
        bias.validate().expect_err("out of range").param,
        "logit_bias"
    );
    let oob = SamplingParams {
        logit_bias: vec![(10, 1.0)],
        ..Default::default()
    };
    let err = Sampler::new(oob, &[], 10, 0).expect_err("token 10 of a 10-token vocabulary");
    assert_eq!(err.param, "logit_bias");
    assert!(
        SamplingParams::default().validate().is_ok() && SamplingParams::greedy().validate().is_ok()
    );
}

#[test]
fn greedy_is_argmax_with_ties_to_the_lowest_id() {
    let logits = [0.5, 3.0, -1.0, 3.0, 2.9];
    for p in [
        SamplingParams::greedy(),
        SamplingParams {
            top_k: 1,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1e-6,
            ..Default::default()
        },
    ] {
        let mut sampler = Sampler::new(p, &[], 5, 9).expect("valid");
        let mut s = SamplerScratch::default();
        for _ in 0..10 {
            assert_eq!(sampler.sample(&logits, &mut s).token, 1);
        }
    }
    // Greedy sees the penalties and the bias.
    let p = SamplingParams {
        logit_bias: vec![(4, 0.2)],
        ..SamplingParams::greedy()
    };
    let mut sampler = Sampler::new(p, &[], 5, 0).expect("valid");
    assert_eq!(
        sampler
            .sample(&logits, &mut SamplerScratch::default())
            .token,
        4
    );
}

#[test]
fn logprobs_are_the_raw_log_softmax() {
    let logits = [1.0f32, 3.0, 3.0, -2.0, f32::NEG_INFINITY];
    let p = SamplingParams {
        temperature: 0.5,
        logprobs: Some(3),
        logit_bias: vec![(0, 50.0)],
        ..Default::default()
    };
    let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
    let out = sampler.sample(&logits, &mut SamplerScratch::default());
    assert_eq!(out.token, 0, "the bias makes token 0 certain");
    let lse = (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
    let lp = out.logprobs.expect("requested");
    assert!(
        (f64::from(lp.logprob) - (1.0 - lse)).abs() < 1e-6,
        "raw logprob, not the biased one"
    );
    let top: Vec<u32> = lp.top.iter().map(|(id, _)| *id).collect();
    assert_eq!(top, [1, 2, 0], "most likely first, ties by id");
    assert!((f64::from(lp.top[0].1) - (3.0 - lse)).abs() < 1e-6);
    // `-inf` is reported as vLLM's -9999.
    let p = SamplingParams {
        logprobs: Some(5),
        ..SamplingParams::greedy()
    };
    let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
    let lp = sampler
        .sample(&logits, &mut SamplerScratch::default())
        .logprobs
        .expect("requested");
    assert_eq!(lp.top[4], (4, MIN_LOGPROB));
    let p = SamplingParams {
        logprobs: Some(0),
        ..SamplingParams::greedy()
    };
    let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
    assert!(sampler
        .sample(&logits, &mut SamplerScratch::default())
        .logprobs
        .expect("requested")
        .top
        .is_empty());
}

#[test]
fn degenerate_logits_do_not_panic() {
    let mut s = SamplerScratch::default();
    for logits in [
        [f32::NEG_INFINITY; 4],
        [f32::NAN, 1.0, f32::NAN, 0.0],
        [0.0, f32::INFINITY, 1.0, f32::INFINITY],
    ] {
        let mut sampler = Sampler::new(params(1.0, 0, 0.9, 0.1), &[], 4, 0).expect("valid");
        let token = sampler.sample(&logits, &mut s).token;
        assert!(token < 4);
        if logits[1].is_infinite() && logits[1] > 0.0 {
            assert_eq!(token, 1);
        }
        if logits[0].is_nan() {
            assert_ne!(token, 0, "NaN is never sampled");
        }
    }
}
