//! `plumb bench-serve`: times a running server (the client is plumb-server's
//! [`BenchClient`]) at each concurrency level and prints a table or JSON.

use anyhow::{bail, Result};
use plumb_server::bench_serve::{BenchClient, BenchConfig, LevelResult};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Server address, host:port (the server must listen there already).
    #[arg(long, default_value_t = BenchConfig::default().addr)]
    addr: String,
    /// Requests per concurrency level.
    #[arg(short = 'n', long, default_value_t = BenchConfig::default().requests)]
    requests: usize,
    /// Concurrency levels to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,16")]
    concurrency: Vec<usize>,
    /// Tokens generated per request (end-of-sequence is ignored so every request runs in full).
    #[arg(long, default_value_t = BenchConfig::default().max_tokens)]
    max_tokens: usize,
    /// Words in each prompt (each request's prompt differs).
    #[arg(long, default_value_t = BenchConfig::default().prompt_words)]
    prompt_words: usize,
    /// Bearer key, if the server wants one.
    #[arg(long)]
    api_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn main(a: Args) -> Result<()> {
    if a.requests == 0 || a.concurrency.contains(&0) {
        bail!("--requests and every --concurrency level must be at least 1");
    }
    let client = BenchClient::new(BenchConfig {
        addr: a.addr.clone(),
        requests: a.requests,
        max_tokens: a.max_tokens,
        prompt_words: a.prompt_words,
        api_key: a.api_key.clone(),
    })?;
    let model = client.model_id()?;
    eprintln!("plumb: benchmarking {model} at {}", a.addr);
    let mut results = Vec::new();
    for &c in &a.concurrency {
        eprintln!("plumb: {} requests at concurrency {c}", a.requests);
        results.push(client.level(&model, c)?);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "results": results }))?
        );
    } else {
        print_table(&results);
    }
    Ok(())
}

fn print_table(results: &[LevelResult]) {
    println!("| concurrency | requests | output t/s | req/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in results {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.0} / {:.0} / {:.0} | {:.1} / {:.1} / {:.1} |",
            r.concurrency,
            r.requests,
            r.output_tokens_per_s,
            r.requests_per_s,
            r.ttft_ms.p50,
            r.ttft_ms.p90,
            r.ttft_ms.p99,
            r.itl_ms.p50,
            r.itl_ms.p90,
            r.itl_ms.p99
        );
    }
}
