//! One file per subcommand.

pub mod bench;
pub mod generate;
pub mod quantize;
pub mod sampling;
pub mod serve;
pub mod synth;

/// A quantized weight format a float checkpoint can be converted to (`--quantization`,
/// `kestrel quantize --type`), by llama.cpp's names.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum QuantType {
    /// 8-bit blocks of 32 (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit k-quant super-blocks of 256 (4.5 bits per weight).
    #[value(name = "q4_k")]
    Q4K,
}

impl QuantType {
    pub fn format(self) -> kestrel_backend::WeightFormat {
        match self {
            QuantType::Q8_0 => kestrel_backend::WeightFormat::Q8_0,
            QuantType::Q4K => kestrel_backend::WeightFormat::Q4_K,
        }
    }
}

/// `--speculative-config` (vLLM's JSON object): checked by clap before anything loads, so a
/// bad value is a one-line error naming the flag and the field.
pub fn parse_speculative_config(s: &str) -> Result<kestrel_engine::SpeculativeConfig, String> {
    kestrel_engine::SpeculativeConfig::from_json(s).map_err(|e| e.0)
}
