//! The measurement behind `plumb bench-serve`: replays requests against a running server at a
//! given concurrency and measures throughput, time to first token and inter-token latency. A
//! minimal HTTP/1.1 client over a TCP stream reads the SSE stream token by token (no client
//! library: the timings are of the server, not of a client's buffering); a character split
//! between two chunks of the body is joined by a [`Utf8Decoder`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use plumb_tokenizer::Utf8Decoder;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What [`BenchClient`] sends.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Server address, host:port.
    pub addr: String,
    /// Requests per concurrency level.
    pub requests: usize,
    /// Tokens generated per request (end-of-sequence is ignored so every request runs in full).
    pub max_tokens: usize,
    /// Words in each prompt (each request's prompt differs).
    pub prompt_words: usize,
    /// Bearer key, if the server wants one.
    pub api_key: Option<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            addr: "127.0.0.1:8080".into(),
            requests: 32,
            max_tokens: 64,
            prompt_words: 100,
            api_key: None,
        }
    }
}

/// Times a running server: [`model_id`](Self::model_id) asks what it serves,
/// [`level`](Self::level) runs one concurrency level.
pub struct BenchClient {
    rt: tokio::runtime::Runtime,
    config: Arc<BenchConfig>,
}

/// One request's timings.
#[derive(Debug, Clone, Default)]
struct Trace {
    ttft: f64,
    itl: Vec<f64>,
    tokens: usize,
}

/// The figures of one concurrency level.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub requests: usize,
    pub seconds: f64,
    pub output_tokens_per_s: f64,
    pub requests_per_s: f64,
    pub ttft_ms: Percentiles,
    pub itl_ms: Percentiles,
}

/// Percentiles of a set of durations, in milliseconds (all zero for an empty set).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] * 1e3;
    Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
    }
}

impl BenchClient {
    pub fn new(config: BenchConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(BenchClient {
            rt,
            config: Arc::new(config),
        })
    }

    /// The id of the model the server serves (the first of `GET /v1/models`).
    pub fn model_id(&self) -> Result<String> {
        self.rt.block_on(model_id(&self.config))
    }

    /// Sends the configured number of requests for `model`, `concurrency` at a time.
    pub fn level(&self, model: &str, concurrency: usize) -> Result<LevelResult> {
        self.rt.block_on(level(&self.config, model, concurrency))
    }
}

fn auth_header(a: &BenchConfig) -> String {
    a.api_key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default()
}

async fn model_id(a: &BenchConfig) -> Result<String> {
    let auth = auth_header(a);
    let mut stream = TcpStream::connect(&a.addr)
        .await
        .with_context(|| format!("connecting to {}", a.addr))?;
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
        a.addr
    );
    stream.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let (start, end) = (text.find('{'), text.rfind('}'));
    let body = match (start, end) {
        (Some(s), Some(e)) if s < e => &text[s..=e],
        _ => bail!(
            "GET /v1/models gave no JSON: {}",
            text.lines().next().unwrap_or("")
        ),
    };
    let v: serde_json::Value = serde_json::from_str(body).context("GET /v1/models")?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("GET /v1/models lists no model"))
}

async fn level(a: &Arc<BenchConfig>, model: &str, concurrency: usize) -> Result<LevelResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (a, next, model) = (a.clone(), next.clone(), model.to_string());
        tasks.push(tokio::spawn(async move {
            let mut traces = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.requests {
                    return Ok::<_, anyhow::Error>(traces);
                }
                traces.push(one_request(&a, &model, i).await?);
            }
        }));
    }
    let mut traces = Vec::new();
    for t in tasks {
        traces.extend(
            t.await
                .map_err(|e| anyhow!("a client task failed: {e}"))??,
        );
    }
    let seconds = t0.elapsed().as_secs_f64();
    let tokens: usize = traces.iter().map(|t| t.tokens).sum();
    Ok(LevelResult {
        concurrency,
        requests: traces.len(),
        seconds,
        output_tokens_per_s: tokens as f64 / seconds,
        requests_per_s: traces.len() as f64 / seconds,
        ttft_ms: percentiles(traces.iter().map(|t| t.ttft).collect()),
        itl_ms: percentiles(traces.iter().flat_map(|t| t.itl.iter().copied()).collect()),
    })
}

const WORDS: &[&str] = &[
    "river", "stone", "light", "quiet", "engine", "garden", "paper", "winter", "signal", "orbit",
];

async fn one_request(a: &BenchConfig, model: &str, i: usize) -> Result<Trace> {
    let (head, body) = completion_request(a, model, i);
    let mut stream = TcpStream::connect(&a.addr)
        .await
        .with_context(|| format!("connecting to {}", a.addr))?;
    let t0 = Instant::now();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut r = BufReader::new(stream);
    let chunked = read_head(&mut r).await?;
    let mut trace = Trace::default();
    let mut last: Option<Instant> = None;
    let mut utf8 = Utf8Decoder::default();
    let mut pending = String::new();
    while let Some(data) = read_data(&mut r, chunked).await? {
        pending.push_str(&utf8.push(&data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(payload) = event.trim().strip_prefix("data:") else {
                continue;
            };
            let payload = payload.trim();
            if payload == "[DONE]" {
                return Ok(trace);
            }
            let v: serde_json::Value =
                serde_json::from_str(payload).context("a malformed SSE event")?;
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                // The closing usage chunk carries the exact token count: a token whose text is
                // empty (half of a character) sends no chunk of its own.
                trace.tokens = n as usize;
                continue;
            }
            let has_text = v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty());
            if !has_text {
                continue;
            }
            let now = Instant::now();
            match last {
                None => trace.ttft = (now - t0).as_secs_f64(),
                Some(prev) => trace.itl.push((now - prev).as_secs_f64()),
            }
            last = Some(now);
        }
    }
    Ok(trace)
}

/// Request `i`'s streamed completion (each request's prompt differs): head and body.
fn completion_request(a: &BenchConfig, model: &str, i: usize) -> (String, String) {
    let prompt: Vec<&str> = (0..a.prompt_words)
        .map(|w| WORDS[(w * 7 + i * 3 + w / 3) % WORDS.len()])
        .collect();
    let body = serde_json::json!({
        "model": model,
        "prompt": format!("Request {i}: {}", prompt.join(" ")),
        "max_tokens": a.max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": true,
        "stream_options": {"include_usage": true},
        "ignore_eos": true,
    })
    .to_string();
    let auth = auth_header(a);
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        a.addr,
        body.len()
    );
    (head, body)
}

/// Reads the status line and headers; fails unless the status is 200. Returns whether the
/// body is chunked.
async fn read_head(r: &mut BufReader<TcpStream>) -> Result<bool> {
    let mut status = String::new();
    r.read_line(&mut status).await?;
    if !status.contains(" 200 ") {
        let mut rest = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_string(&mut rest)).await;
        bail!(
            "the server answered {}: {}",
            status.trim(),
            rest.lines().last().unwrap_or("")
        );
    }
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("the connection closed in the headers");
        }
        if line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
        {
            chunked = true;
        }
        if line == "\r\n" {
            return Ok(chunked);
        }
    }
}

/// The next bytes of the body: one chunk, or one line when the body is not chunked; None at
/// its end.
async fn read_data(r: &mut BufReader<TcpStream>, chunked: bool) -> Result<Option<Vec<u8>>> {
    if !chunked {
        let mut line = Vec::new();
        return Ok((r.read_until(b'\n', &mut line).await? > 0).then_some(line));
    }
    let mut size = String::new();
    if r.read_line(&mut size).await? == 0 {
        return Ok(None);
    }
    let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
        .context("a bad chunk size")?;
    let mut buf = vec![0u8; n + 2];
    r.read_exact(&mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some(buf))
}
