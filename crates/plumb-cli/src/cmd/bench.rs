//! `plumb bench`: llama-bench-style prompt-processing (ppN) and generation (tgN) throughput.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use plumb_engine::bench::{self, BenchResult, Pick, Test};
use plumb_engine::SamplingParams;
use plumb_gguf::GgufFile;
use plumb_model::Model;
use plumb_ops::Backend;
use serde_json::json;

use crate::common::DeviceArgs;
use crate::machine::Machine;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: plumb bench -p 128 -n 64 -r 5 --md\n\
Figures are tokens per second: mean ± sample standard deviation over -r repetitions, after one \
warm-up run. tgN decodes N tokens one at a time from an empty cache; ppN prefills N tokens.")]
pub struct Args {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1]; synthetic models work too.
    #[arg(long, short = 'm', value_name = "PATH")]
    model: Option<PathBuf>,
    /// Prompt lengths to test (comma-separated; 0 for none).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated; 0 for none).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "64"
    )]
    gen: Vec<usize>,
    /// Run this many sequences at once (comma-separated list), llama-batched-bench style: each
    /// gets a prompt of the first -p length, then the first -n length of tokens is decoded for
    /// all of them together; figures are aggregate tokens per second.
    #[arg(long, value_delimiter = ',')]
    parallel: Vec<usize>,
    /// With --parallel: draw every token through the server's sampling step, the backend's
    /// sample_rows (temperature --temp, the other filters off, sequence i seeded with i, as
    /// `plumb bench-serve` asks), instead of greedy argmax ids.
    #[arg(long, requires = "parallel")]
    sample: bool,
    /// The temperature of --sample.
    #[arg(
        long = "temp",
        default_value_t = 0.8,
        value_name = "T",
        requires = "sample"
    )]
    temperature: f32,
    /// Repetitions of each test.
    #[arg(short = 'r', long, default_value_t = 5)]
    reps: usize,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print JSON (an object with `machine`, `model` and `results`).
    #[arg(long, conflicts_with_all = ["csv", "md"])]
    json: bool,
    /// Print CSV.
    #[arg(long, conflicts_with = "md")]
    csv: bool,
    /// Print a markdown table.
    #[arg(long)]
    md: bool,
}

pub fn main(a: Args) -> Result<()> {
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    let mut tests: Vec<Test> = a
        .prompt
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| Test::Prompt(n))
        .collect();
    tests.extend(a.gen.iter().filter(|&&n| n > 0).map(|&n| Test::Generate(n)));
    if tests.is_empty() {
        bail!("nothing to run: give -p or -n a nonzero length");
    }
    let path = crate::common::model_path(a.model.as_deref())?;
    let file = GgufFile::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let choice = a.device.choice()?;
    let parallel = a.parallel.clone();
    let pick = if a.sample {
        let params = SamplingParams {
            temperature: a.temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplingParams::default()
        };
        params.validate().map_err(anyhow::Error::msg)?;
        Pick::Sample(params)
    } else {
        Pick::Greedy
    };
    let (pp_len, tg_len) = (
        a.prompt.first().copied().unwrap_or(128),
        a.gen.first().copied().unwrap_or(128),
    );
    let results: Vec<Row> = crate::common::with_backend!(&choice, |b| {
        if parallel.is_empty() {
            run(&file, b, &tests, a.reps)?
                .into_iter()
                .map(|r| (None, r))
                .collect()
        } else {
            run_parallel(&file, b, &parallel, pp_len, tg_len, a.reps, &pick)?
        }
    });
    let threads = match &choice {
        crate::common::Choice::Cpu { threads } => {
            threads.unwrap_or(crate::machine::describe().cores)
        }
        _ => 0,
    };
    let setup = Setup {
        file_name: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model_name: file.get_str("general.name").unwrap_or("").to_string(),
        size: file.tensors.iter().map(|t| t.n_bytes).sum(),
        backend: choice.kind().name(),
        threads,
        machine: crate::machine::describe(),
    };
    if a.json {
        print_json(&setup, &results)
    } else if a.csv {
        print_csv(&setup, &results);
        Ok(())
    } else {
        print_table(&setup, &results, a.md);
        Ok(())
    }
}

/// What the figures were measured on.
struct Setup {
    file_name: String,
    model_name: String,
    size: usize,
    backend: &'static str,
    threads: usize,
    machine: Machine,
}

/// One result: the number of sequences of a `--parallel` run, and the figures.
type Row = (Option<usize>, BenchResult);

fn print_json(s: &Setup, results: &[Row]) -> Result<()> {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|(par, r)| {
            json!({
                "parallel": par.unwrap_or(1),
                "test": r.test.name(), "n_tokens": r.test.tokens(), "avg_ts": r.mean(), "stddev_ts": r.stddev(),
                "samples_ts": r.samples, "backend": s.backend, "threads": s.threads,
            })
        })
        .collect();
    let v = json!({
        "machine": s.machine,
        "model": {"file": s.file_name, "name": s.model_name, "size_bytes": s.size},
        "results": rows,
    });
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn print_csv(s: &Setup, results: &[Row]) {
    println!("model,backend,threads,parallel,test,avg_ts,stddev_ts");
    for (par, r) in results {
        println!(
            "{},{},{},{},{},{:.3},{:.3}",
            s.file_name,
            s.backend,
            s.threads,
            par.unwrap_or(1),
            r.test.name(),
            r.mean(),
            r.stddev()
        );
    }
}

/// The markdown table; unless `md_only`, the machine goes to stderr first.
fn print_table(s: &Setup, results: &[Row], md_only: bool) {
    if !md_only {
        let m = &s.machine;
        eprintln!(
            "plumb {} on {} ({} cores; {})",
            m.plumb_commit,
            m.cpu,
            m.cores,
            m.features.join(" ")
        );
    }
    println!("| model | size | backend | threads | parallel | test | t/s |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for (par, r) in results {
        println!(
            "| {} | {:.1} MiB | {} | {} | {} | {} | {:.2} ± {:.2} |",
            s.file_name,
            s.size as f64 / (1 << 20) as f64,
            s.backend,
            s.threads,
            par.unwrap_or(1),
            r.test.name(),
            r.mean(),
            r.stddev()
        );
    }
}

fn run<B: Backend>(
    file: &GgufFile,
    backend: B,
    tests: &[Test],
    reps: usize,
) -> Result<Vec<BenchResult>> {
    let model = Model::load(file, backend)?;
    let ctx = tests.iter().map(|t| t.tokens()).max().unwrap_or(1);
    let mut cache = model.new_cache(ctx)?;
    let mut out = Vec::new();
    for (i, &t) in tests.iter().enumerate() {
        eprintln!("plumb: {} ({} reps)", t.name(), reps);
        out.push(bench::run(&model, &mut cache, t, reps, 1000 + i as u64)?);
    }
    Ok(out)
}

fn run_parallel<B: Backend>(
    file: &GgufFile,
    backend: B,
    parallel: &[usize],
    prompt: usize,
    gen: usize,
    reps: usize,
    pick: &Pick,
) -> Result<Vec<Row>> {
    let model = Model::load(file, backend)?;
    let mut out = Vec::new();
    for (i, &p) in parallel.iter().enumerate() {
        eprintln!("plumb: {p} sequences × (pp{prompt} + tg{gen}) ({reps} reps)");
        let seed = 2000 + i as u64;
        let (pp, tg) = bench::run_parallel(&model, p, prompt, gen, reps, seed, pick)?;
        out.push((Some(p), pp));
        out.push((Some(p), tg));
    }
    Ok(out)
}
