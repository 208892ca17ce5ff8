//! `kestrel`: one binary for the Qwen3 family — generate from the terminal, make synthetic
//! models for benchmarks, and (as the server lands) serve an OpenAI-compatible API.

mod cli;
mod load;
mod logging;
mod model_identity;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kestrel",
    version,
    about = "Inference for the Qwen3 family of language models"
)]
struct Cli {
    /// Log lines as text or as one JSON object per line (level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed to the terminal.
    Generate(cli::generate::GenerateArgs),
    /// Write a random-weight model with the exact shapes of a real Qwen3 checkpoint.
    Synth(cli::synth::SynthArgs),
    /// Write a float checkpoint as a quantized GGUF file (q8_0 or q4_k).
    Quantize(cli::quantize::QuantizeArgs),
    /// Serve an OpenAI-compatible API (chat, completions, streaming, thinking, tools).
    Serve(cli::serve::ServeArgs),
    /// Benchmark any OpenAI-compatible server: TTFT, TPOT, ITL, latency, throughput, goodput.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    load::init_allocator();
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(args),
        Command::Synth(args) => cli::synth::run(args),
        Command::Quantize(args) => cli::quantize::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the outermost context first, then the causes. This is the command's
            // answer, not a log line, so it stays plain for every log format.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
