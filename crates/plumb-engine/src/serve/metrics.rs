//! The engine's counters, gauges and latency histograms. The engine thread updates them;
//! [`EngineHandle::metrics`](super::EngineHandle::metrics) copies them out.

use super::SubmitError;

/// How a request ended (or why it never started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Every choice finished (stop or length).
    Completed,
    /// Cancelled, or its receiver was dropped.
    Cancelled,
    /// The engine failed on it (an error event was sent).
    Failed,
    /// Refused at submit: the waiting queue was full.
    RejectedOverloaded,
    /// Refused at submit: prompt + max_tokens over the context.
    RejectedTooLong,
    /// Refused at submit: invalid parameters.
    RejectedInvalid,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 6] = [
        RequestStatus::Completed,
        RequestStatus::Cancelled,
        RequestStatus::Failed,
        RequestStatus::RejectedOverloaded,
        RequestStatus::RejectedTooLong,
        RequestStatus::RejectedInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Completed => "completed",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::Failed => "failed",
            RequestStatus::RejectedOverloaded => "rejected_overloaded",
            RequestStatus::RejectedTooLong => "rejected_too_long",
            RequestStatus::RejectedInvalid => "rejected_invalid",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A cumulative histogram in seconds (Prometheus style: `counts[i]` observations were
/// `≤ bounds[i]`; `count` includes those above the last bound).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Latency buckets, 1 ms to 60 s.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    fn latency() -> Histogram {
        Histogram {
            bounds: LATENCY_BOUNDS,
            counts: vec![0; LATENCY_BOUNDS.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, seconds: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if seconds <= *b {
                *c += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A copy of the engine's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Requests ended or refused, by status (indexed like [`RequestStatus::ALL`]).
    pub requests: Vec<(RequestStatus, u64)>,
    /// Prompt tokens of the requests that were admitted (counted once per request).
    pub prompt_tokens: u64,
    /// Prompt tokens looked up in the prefix cache (every admitted prompt but its last token).
    pub prefix_cache_queries: u64,
    /// Of those, the tokens found: their keys and values were reused, not computed.
    pub prefix_cache_hits: u64,
    /// Tokens generated, over all choices.
    pub generated_tokens: u64,
    /// Submit to first token of a request.
    pub time_to_first_token: Histogram,
    /// Between consecutive tokens of a choice.
    pub inter_token_latency: Histogram,
    /// Sequences holding a KV cache now (a request with `n` choices holds `n` once forked).
    pub running_sequences: usize,
    /// Requests submitted and not yet running.
    pub waiting_requests: usize,
    /// Bytes of the paged KV cache's blocks in use (keys and values of every layer, f32).
    pub kv_bytes_used: u64,
    /// Bytes of the paged KV cache's free blocks.
    pub kv_bytes_free: u64,
    /// Engine steps run.
    pub steps: u64,
    /// Where the engine thread's time went in the steps that ran a forward.
    pub step_times: StepTimes,
}

/// Seconds of the engine thread, summed over the steps that ran a forward: queueing the
/// forward (on a GPU, the launches or the replay of a recorded pass), waiting for its logits,
/// drawing the tokens, and everything else of the step (planning, block reservations,
/// admissions, handing out tokens, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    pub steps: u64,
    pub launch: f64,
    pub wait: f64,
    pub sample: f64,
    pub host: f64,
}

impl MetricsSnapshot {
    pub fn requests_with(&self, status: RequestStatus) -> u64 {
        self.requests
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }
}

/// The paged KV cache's state as of the last engine step
/// ([`EngineHandle::kv_stats`](super::EngineHandle::kv_stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStats {
    pub block_size: usize,
    pub blocks_total: usize,
    pub blocks_used: usize,
    pub blocks_free: usize,
    /// Of the free blocks, those that still hold a cached prefix.
    pub blocks_cached: usize,
    /// The most blocks in use at the end of a step so far.
    pub peak_blocks_used: usize,
    /// Bytes of one block (keys and values of every layer).
    pub bytes_per_block: usize,
    /// Requests preempted (their blocks freed, recomputed later) so far.
    pub preemptions: u64,
}

pub(crate) struct Metrics {
    requests: [u64; RequestStatus::ALL.len()],
    pub prompt_tokens: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub generated_tokens: u64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub running_sequences: usize,
    pub waiting_requests: usize,
    pub kv_bytes_used: u64,
    kv_budget: u64,
    pub steps: u64,
    pub step_times: StepTimes,
    pub kv: KvStats,
}

impl Metrics {
    pub fn new(kv: KvStats) -> Metrics {
        Metrics {
            requests: [0; RequestStatus::ALL.len()],
            prompt_tokens: 0,
            prefix_cache_queries: 0,
            prefix_cache_hits: 0,
            generated_tokens: 0,
            ttft: Histogram::latency(),
            itl: Histogram::latency(),
            running_sequences: 0,
            waiting_requests: 0,
            kv_bytes_used: 0,
            kv_budget: (kv.blocks_total * kv.bytes_per_block) as u64,
            steps: 0,
            step_times: StepTimes::default(),
            kv,
        }
    }

    pub fn count(&mut self, status: RequestStatus) {
        self.requests[status.index()] += 1;
    }

    pub fn rejected(&mut self, e: &SubmitError) {
        self.count(match e {
            SubmitError::Overloaded { .. } => RequestStatus::RejectedOverloaded,
            SubmitError::TooLong { .. } => RequestStatus::RejectedTooLong,
            SubmitError::Invalid(_) | SubmitError::Closed => RequestStatus::RejectedInvalid,
        });
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: RequestStatus::ALL
                .iter()
                .map(|&s| (s, self.requests[s.index()]))
                .collect(),
            prompt_tokens: self.prompt_tokens,
            prefix_cache_queries: self.prefix_cache_queries,
            prefix_cache_hits: self.prefix_cache_hits,
            generated_tokens: self.generated_tokens,
            time_to_first_token: self.ttft.clone(),
            inter_token_latency: self.itl.clone(),
            running_sequences: self.running_sequences,
            waiting_requests: self.waiting_requests,
            kv_bytes_used: self.kv_bytes_used,
            kv_bytes_free: self.kv_budget.saturating_sub(self.kv_bytes_used),
            steps: self.steps,
            step_times: self.step_times,
        }
    }
}
