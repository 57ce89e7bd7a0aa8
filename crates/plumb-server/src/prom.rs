//! `GET /metrics`: the engine's metrics in the Prometheus text exposition format (0.0.4).

use std::fmt::Write;

use plumb_engine::serve::{Histogram, KvStats, MetricsSnapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn render(m: &MetricsSnapshot, kv: &KvStats, model: &str) -> String {
    let mut out = String::new();
    let label = format!("model=\"{}\"", escape(model));
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (suffix_labels, value) in samples {
            let _ = writeln!(out, "{name}{suffix_labels} {value}");
        }
    };
    let plain = |v: String| vec![(format!("{{{label}}}"), v)];

    let by_status: Vec<(String, String)> = m
        .requests
        .iter()
        .map(|(s, n)| {
            (
                format!("{{{label},status=\"{}\"}}", s.as_str()),
                n.to_string(),
            )
        })
        .collect();
    metric(
        "plumb_requests_total",
        "counter",
        "Requests ended or refused, by status.",
        &by_status,
    );
    for (name, kind, help, value) in scalars(m, kv) {
        metric(name, kind, help, &plain(value));
    }
    let t = &m.step_times;
    let phases: Vec<(String, String)> = [
        ("launch", t.launch),
        ("wait", t.wait),
        ("sample", t.sample),
        ("host", t.host),
    ]
    .iter()
    .map(|(phase, s)| (format!("{{{label},phase=\"{phase}\"}}"), s.to_string()))
    .collect();
    metric(
        "plumb_engine_step_seconds_total",
        "counter",
        "Engine thread time in the steps that ran a forward: queueing the forward, waiting for \
         its logits, drawing tokens, and the rest of the step.",
        &phases,
    );
    metric(
        "plumb_time_to_first_token_seconds",
        "histogram",
        "Submit to first token.",
        &histogram(&label, &m.time_to_first_token),
    );
    metric(
        "plumb_inter_token_latency_seconds",
        "histogram",
        "Time between consecutive tokens of a choice.",
        &histogram(&label, &m.inter_token_latency),
    );
    out
}

/// (name, type, help, value) of the metrics with one sample, in the order they are rendered.
fn scalars(
    m: &MetricsSnapshot,
    kv: &KvStats,
) -> [(&'static str, &'static str, &'static str, String); 14] {
    [
        (
            "plumb_prompt_tokens_total",
            "counter",
            "Prompt tokens of admitted requests.",
            m.prompt_tokens.to_string(),
        ),
        (
            "plumb_prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            m.prefix_cache_queries.to_string(),
        ),
        (
            "plumb_prefix_cache_hits_total",
            "counter",
            "Prompt tokens found in the prefix cache (their keys and values reused).",
            m.prefix_cache_hits.to_string(),
        ),
        (
            "plumb_generation_tokens_total",
            "counter",
            "Tokens generated over all choices.",
            m.generated_tokens.to_string(),
        ),
        (
            "plumb_running_sequences",
            "gauge",
            "Sequences holding a KV cache.",
            m.running_sequences.to_string(),
        ),
        (
            "plumb_waiting_requests",
            "gauge",
            "Requests waiting for a batch slot.",
            m.waiting_requests.to_string(),
        ),
        (
            "plumb_kv_cache_used_bytes",
            "gauge",
            "KV cache bytes held by running sequences.",
            m.kv_bytes_used.to_string(),
        ),
        (
            "plumb_kv_cache_free_bytes",
            "gauge",
            "KV cache bytes of free blocks.",
            m.kv_bytes_free.to_string(),
        ),
        (
            "plumb_kv_blocks_used",
            "gauge",
            "Paged KV cache blocks in use.",
            kv.blocks_used.to_string(),
        ),
        (
            "plumb_kv_blocks_free",
            "gauge",
            "Paged KV cache blocks free.",
            kv.blocks_free.to_string(),
        ),
        (
            "plumb_kv_blocks_cached",
            "gauge",
            "Free paged KV cache blocks that still hold a cached prefix.",
            kv.blocks_cached.to_string(),
        ),
        (
            "plumb_kv_block_tokens",
            "gauge",
            "Tokens per KV cache block.",
            kv.block_size.to_string(),
        ),
        (
            "plumb_preemptions_total",
            "counter",
            "Requests preempted when KV blocks ran out (freed, recomputed later).",
            kv.preemptions.to_string(),
        ),
        (
            "plumb_engine_steps_total",
            "counter",
            "Scheduler steps run.",
            m.steps.to_string(),
        ),
    ]
}

/// Histogram samples: `metric` prints `{name}{suffix and labels}`, so the `_bucket`, `_sum`
/// and `_count` suffixes lead the label part.
fn histogram(label: &str, h: &Histogram) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .bounds
        .iter()
        .zip(&h.counts)
        .map(|(b, c)| (format!("_bucket{{{label},le=\"{b}\"}}"), c.to_string()))
        .collect();
    v.push((
        format!("_bucket{{{label},le=\"+Inf\"}}"),
        h.count.to_string(),
    ));
    v.push((format!("_sum{{{label}}}"), h.sum.to_string()));
    v.push((format!("_count{{{label}}}"), h.count.to_string()));
    v
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_well_formed() {
        let m = MetricsSnapshot {
            requests: vec![(plumb_engine::serve::RequestStatus::Cancelled, 2)],
            prompt_tokens: 5,
            prefix_cache_queries: 4,
            prefix_cache_hits: 3,
            generated_tokens: 7,
            time_to_first_token: Histogram {
                bounds: &[0.1, 1.0],
                counts: vec![1, 2],
                sum: 0.6,
                count: 3,
            },
            inter_token_latency: Histogram {
                bounds: &[0.1],
                counts: vec![0],
                sum: 0.0,
                count: 0,
            },
            running_sequences: 1,
            waiting_requests: 0,
            kv_bytes_used: 10,
            kv_bytes_free: 20,
            steps: 3,
            step_times: plumb_engine::serve::StepTimes {
                steps: 3,
                launch: 0.0625,
                wait: 0.5,
                sample: 0.25,
                host: 0.125,
            },
        };
        let kv = KvStats {
            block_size: 16,
            blocks_total: 10,
            blocks_used: 4,
            blocks_free: 6,
            blocks_cached: 2,
            peak_blocks_used: 5,
            bytes_per_block: 1024,
            preemptions: 1,
        };
        let t = render(&m, &kv, "m\"x");
        assert!(t.contains("plumb_kv_blocks_free{model=\"m\\\"x\"} 6\n"));
        assert!(t.contains("plumb_requests_total{model=\"m\\\"x\",status=\"cancelled\"} 2\n"));
        assert!(t.contains("plumb_running_sequences{model=\"m\\\"x\"} 1\n"));
        assert!(t.contains("plumb_prefix_cache_hits_total{model=\"m\\\"x\"} 3\n"));
        assert!(t.contains("plumb_kv_blocks_cached{model=\"m\\\"x\"} 2\n"));
        assert!(
            t.contains("plumb_engine_step_seconds_total{model=\"m\\\"x\",phase=\"sample\"} 0.25\n")
        );
        assert!(
            t.contains("plumb_engine_step_seconds_total{model=\"m\\\"x\",phase=\"wait\"} 0.5\n")
        );
        assert!(t.contains(
            "plumb_engine_step_seconds_total{model=\"m\\\"x\",phase=\"launch\"} 0.0625\n"
        ));
        assert!(t.contains(
            "plumb_time_to_first_token_seconds_bucket{model=\"m\\\"x\",le=\"+Inf\"} 3\n"
        ));
        assert!(t.contains("plumb_time_to_first_token_seconds_count{model=\"m\\\"x\"} 3\n"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            assert!(
                series.starts_with("plumb_") && value.parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
