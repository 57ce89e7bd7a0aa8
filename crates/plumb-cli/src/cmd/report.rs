//! `plumb report`: markdown tables and SVG charts from saved `bench --json` and
//! `bench-ops --json` results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  plumb bench --json > cpu.json\n  plumb bench-ops --json > ops.json\n  \
plumb report cpu.json ops.json -o report.md\nCharts are written beside the report as REPORT-N.svg."
)]
pub struct Args {
    /// Result files written by `plumb bench --json` or `plumb bench-ops --json`.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// The markdown file to write.
    #[arg(short = 'o', long)]
    output: PathBuf,
}

struct Bar {
    label: String,
    value: f64,
    err: f64,
}

pub fn main(a: Args) -> Result<()> {
    let mut md = String::from("# plumb benchmark report\n\n");
    let mut charts = 0;
    let stem = a
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let dir = a
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for path in &a.results {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let _ = writeln!(md, "## {}\n", path.display());
        let _ = writeln!(md, "{}\n", machine_line(&v["machine"]));
        let (bars, title) = if let Some(results) = v["results"].as_array() {
            bench_table(&mut md, v["model"]["file"].as_str().unwrap_or("?"), results)
        } else if let Some(ops) = v["ops"].as_array() {
            ops_table(&mut md, v["bandwidth_gbps"].as_f64().unwrap_or(0.0), ops)
        } else {
            bail!(
                "{} has neither `results` (plumb bench) nor `ops` (plumb bench-ops)",
                path.display()
            );
        };
        charts += 1;
        let svg_name = format!("{stem}-{charts}.svg");
        std::fs::write(dir.join(&svg_name), bar_chart(&title, &bars))
            .with_context(|| format!("writing {svg_name}"))?;
        let _ = writeln!(md, "\n![{title}]({svg_name})\n");
    }
    std::fs::write(&a.output, md).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("plumb: wrote {} and {charts} chart(s)", a.output.display());
    Ok(())
}

/// The machine a result file was measured on, as one sentence.
fn machine_line(m: &Value) -> String {
    format!(
        "Machine: {} ({} cores, {}), plumb {}.",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["features"]
            .as_array()
            .map(|f| f
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default(),
        m["plumb_commit"].as_str().unwrap_or("?")
    )
}

/// The table of `plumb bench` results, and their bars and chart title.
fn bench_table(md: &mut String, model: &str, results: &[Value]) -> (Vec<Bar>, String) {
    md.push_str("| model | backend | test | t/s |\n| --- | --- | ---: | ---: |\n");
    let mut bars = Vec::new();
    for r in results {
        let (avg, sd) = (
            r["avg_ts"].as_f64().unwrap_or(0.0),
            r["stddev_ts"].as_f64().unwrap_or(0.0),
        );
        let test = r["test"].as_str().unwrap_or("?");
        let par = r["parallel"]
            .as_u64()
            .map(|p| format!(" ×{p}"))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {model} | {} | {test}{par} | {avg:.2} ± {sd:.2} |",
            r["backend"].as_str().unwrap_or("?")
        );
        bars.push(Bar {
            label: format!("{test}{par}"),
            value: avg,
            err: sd,
        });
    }
    (bars, format!("{model}: tokens per second"))
}

/// The table of `plumb bench-ops` results (`bw`: the measured bandwidth), and their bars and
/// chart title.
fn ops_table(md: &mut String, bw: f64, ops: &[Value]) -> (Vec<Bar>, String) {
    let _ = writeln!(md, "Measured read bandwidth: {bw:.1} GB/s.\n");
    md.push_str("| op | shape | dtype | µs | GB/s | of roofline |\n| --- | --- | --- | ---: | ---: | ---: |\n");
    let mut bars = Vec::new();
    for o in ops {
        let frac = o["roofline_fraction"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.0}% |",
            o["op"].as_str().unwrap_or("?"),
            o["shape"].as_str().unwrap_or("?"),
            o["dtype"].as_str().unwrap_or("?"),
            o["us"].as_f64().unwrap_or(0.0),
            o["gbps"].as_f64().unwrap_or(0.0),
            frac * 100.0
        );
        let label = format!(
            "{} {}",
            o["op"].as_str().unwrap_or("?"),
            o["shape"].as_str().unwrap_or("")
        );
        bars.push(Bar {
            label,
            value: frac * 100.0,
            err: 0.0,
        });
    }
    (bars, "percent of the memory roofline".to_string())
}

/// A horizontal bar chart with error whiskers, as standalone SVG.
fn bar_chart(title: &str, bars: &[Bar]) -> String {
    let (label_w, plot_w, row_h, top) = (340.0, 420.0, 22.0, 40.0);
    let max = bars
        .iter()
        .map(|b| b.value + b.err)
        .fold(0f64, f64::max)
        .max(1e-9);
    let height = top + row_h * bars.len() as f64 + 20.0;
    let width = label_w + plot_w + 90.0;
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n",
        esc(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let w = plot_w * b.value / max;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 14.0,
            esc(&b.label)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"#4477aa\"/>",
            y + 3.0,
            row_h - 6.0
        );
        if b.err > 0.0 {
            let (x0, x1) = (
                label_w + plot_w * (b.value - b.err) / max,
                label_w + plot_w * (b.value + b.err) / max,
            );
            let _ = writeln!(
                s,
                "<line x1=\"{x0:.1}\" x2=\"{x1:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>",
                y + row_h / 2.0,
                y + row_h / 2.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{:.1}</text>",
            label_w + w + 4.0,
            y + 14.0,
            b.value
        );
    }
    s.push_str("</svg>\n");
    s
}
