//! What the backend holds between calls, as plain data: scratch buffers, the q8 activation
//! slots (src/q8.rs), the active step and its recordings (src/step.rs) and the launches held
//! back inside a step (src/defer.rs). The logic lives in those modules; the types live here so
//! that the backend struct (src/device.rs) holds them without importing its own users.

use cudarc::driver::{CudaGraph, CudaSlice, PinnedHostSlice};

use crate::launch::{KvItem, MvItem, RopeItem};

/// Device scratch reused across ops (all ops run in order on one stream, so reuse is safe).
#[derive(Default)]
pub(crate) struct Scratch {
    pub w16: Option<CudaSlice<u16>>,
    pub x16: Option<CudaSlice<u16>>,
    pub w32: Option<CudaSlice<f32>>,
    pub part: Option<CudaSlice<f32>>,
    pub result: Option<CudaSlice<u32>>,
    /// Decode attention: the splits' partials and one arrival counter per KV head (zeroed
    /// once; the kernel resets what it uses).
    pub dec_part: Option<CudaSlice<f32>>,
    pub dec_count: Option<CudaSlice<u32>>,
    /// Paged KV: the slots of a kv_write_slots call and attn_paged's items + block tables.
    pub slots: Option<CudaSlice<u32>>,
    pub paged_meta: Option<CudaSlice<u32>>,
    /// attn_paged's split partials (src/paged.rs `paged_splits`).
    pub paged_part: Option<CudaSlice<f32>>,
    /// What `slots` and `paged_meta` hold now (src/paged.rs reuses an equal upload).
    pub slots_host: Vec<u32>,
    pub paged_meta_host: Vec<u32>,
    /// sample.cu: the rows' records, histories and masks (and what the buffer holds now), the
    /// penalized copies of the rows, the penalty counts (zeroed once; the kernel leaves them
    /// zero) and the results.
    pub sample_meta: Option<CudaSlice<u32>>,
    pub sample_meta_host: Vec<u32>,
    pub sample_work: Option<CudaSlice<f32>>,
    pub sample_counts: Option<CudaSlice<u32>>,
    pub sample_out: Option<CudaSlice<u32>>,
    /// mmq.cu's activations in fragment order: int8 values and (d, d·Σq) pairs.
    pub mmq_xf: Option<CudaSlice<i8>>,
    pub mmq_xd: Option<CudaSlice<f32>>,
}

/// One q8 copy: the device address and length of the f32 buffer it was made from.
pub(crate) struct Slot {
    pub key: u64,
    pub len: usize,
    pub valid: bool,
    pub used: u64,
    pub qs: CudaSlice<i8>,
    pub ds: CudaSlice<f32>,
}

#[derive(Default)]
pub(crate) struct Q8State {
    pub slots: Vec<Slot>,
    /// Elements each slot holds.
    pub cap: usize,
    pub clock: u64,
}

/// The step being run, and the persistent buffers its values travel through.
#[derive(Default)]
pub(crate) struct StepState {
    /// Host copy of the active step's ids and positions (None outside a step).
    pub active: Option<(Vec<u32>, Vec<u32>)>,
    pub host: Option<PinnedHostSlice<u32>>,
    pub dev: Option<CudaSlice<u32>>,
}

impl StepState {
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

/// A recorded step. Graph objects are not internally synchronized; every access goes through
/// the backend's `graphs` mutex.
pub(crate) struct Recording {
    pub key: u64,
    pub epoch: u64,
    pub graph: CudaGraph,
    pub used: u64,
}

#[derive(Default)]
pub(crate) struct Graphs {
    pub disabled: bool,
    pub recs: Vec<Recording>,
    /// Keys that ran their warm-up step in an epoch.
    pub warmed: Vec<(u64, u64)>,
    pub capturing: Option<(u64, u64)>,
    pub clock: u64,
}

impl Graphs {
    pub(crate) fn new(on: bool) -> Graphs {
        Graphs {
            disabled: !on,
            ..Graphs::default()
        }
    }
}

// SAFETY: CudaGraph holds raw driver handles, which may be used from any thread as long as
// calls on one graph are serialized; every Graphs lives inside a Mutex of the backend.
unsafe impl Send for Graphs {}

/// A launch held back inside a step (src/defer.rs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending {
    Matvec(MvItem),
    Rope(RopeItem),
    KvWrite(KvItem),
}
