//! Forward steps and their recordings as CUDA graphs.
//!
//! `begin_step(tokens, positions)` writes the step's values into a persistent pinned host
//! buffer and queues one copy of it into a persistent device buffer, laid out
//! `[ids: n][positions: n]`. Until `end_step`, `embedding`, `rope`, `kv_write` and
//! `attention` read ids, positions and pos0 (= positions[0]) from that device buffer when their
//! arguments are the step's (ops called outside a step — the check harness — upload their
//! arguments as before). A decode step (n = 1) therefore reads device address `ids + 0` and
//! `ids + 1` whatever its token and position, which is what lets a recording replay it.
//!
//! Recording (`record_begin` / `record_end`) is stream capture into a [`CudaGraph`]. A
//! recording bakes in every buffer address, so:
//! - nothing may allocate or synchronize while capturing: `ensure_len` refuses to grow a
//!   scratch buffer during a capture, and the first `record_begin` of a key in an epoch only
//!   warms up (returns false: the ops run, sizing every scratch buffer and loading every
//!   kernel) — the second captures;
//! - every (re)allocation of a buffer a recording may hold (scratch, step, q8 activations)
//!   bumps the backend's epoch, and a recording of an older epoch is never replayed;
//! - at most [`MAX_RECORDINGS`] are kept, least recently used first out.

use std::sync::atomic::Ordering;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaSlice, DevicePtr};
use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::poisoned;
use crate::state::{Recording, StepState};

/// Recordings kept (each holds a few hundred kernel nodes and the addresses of one cache or
/// pool): the contiguous decode step and a paged decode pass for each batch size in use.
pub const MAX_RECORDINGS: usize = 24;

impl CudaBackend {
    /// Turns recording off (`false`: every step runs its ops) or back on; for tests that
    /// compare recorded and plain steps.
    pub fn set_recording(&self, on: bool) -> Result<()> {
        let mut g = self.graphs.lock().map_err(|_| OpError::from(poisoned()))?;
        g.disabled = !on;
        if !on {
            g.recs.clear();
            g.warmed.clear();
        }
        Ok(())
    }

    /// How many recorded steps are kept now.
    pub fn recordings(&self) -> usize {
        self.graphs.lock().map(|g| g.recs.len()).unwrap_or(0)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Called on every (re)allocation of a buffer a recording may hold.
    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Acquire)
    }

    /// An error for work that cannot be part of a recording.
    pub(crate) fn not_capturing(&self, what: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(CudaError::Other(format!(
                "{what} inside a recorded step (allocation or host transfer during capture)"
            ))
            .into());
        }
        Ok(())
    }

    pub(crate) fn begin_step_impl(&self, tokens: &[u32], positions: &[u32]) -> Result<()> {
        if tokens.len() != positions.len() || tokens.is_empty() {
            return Err(OpError::Shape {
                op: "begin_step",
                msg: format!("{} tokens with {} positions", tokens.len(), positions.len()),
            });
        }
        self.flush()?;
        self.not_capturing("begin_step")?;
        self.q8_forget_all();
        let n = tokens.len();
        let mut st = self.step.lock().map_err(|_| OpError::from(poisoned()))?;
        let st = &mut *st;
        // Both buffers hold 2n values; grown by doubling from 512 (a prefill chunk of 256).
        if st.dev.as_ref().is_none_or(|d| d.len() < 2 * n) {
            let cap = (2 * n).next_power_of_two().max(512);
            st.host = None;
            st.dev = None;
            // SAFETY: the pinned buffer is written below before any copy reads it.
            let host = unsafe { self.ctx().alloc_pinned::<u32>(cap) }
                .ctx(|| "allocating the pinned step buffer".into())?;
            let dev = self
                .stream
                .alloc_zeros::<u32>(cap)
                .ctx(|| "allocating the device step buffer".into())?;
            st.host = Some(host);
            st.dev = Some(dev);
            self.bump_epoch();
        }
        let (Some(host), Some(dev)) = (st.host.as_mut(), st.dev.as_mut()) else {
            return Err(CudaError::Other("step buffers vanished".into()).into());
        };
        // Waits for the previous copy out of this buffer (cudarc records an event after it).
        let h = host
            .as_mut_slice()
            .ctx(|| "waiting for the pinned step buffer".into())?;
        h[..n].copy_from_slice(tokens);
        h[n..2 * n].copy_from_slice(positions);
        self.stream
            .memcpy_htod(&*host, dev)
            .ctx(|| "copying the step's ids and positions".into())?;
        st.active = Some((tokens.to_vec(), positions.to_vec()));
        Ok(())
    }

    pub(crate) fn end_step_impl(&self) -> Result<()> {
        let flushed = self.flush();
        self.q8_forget_all();
        // A step that failed while capturing leaves the capture open: close and drop it.
        let open = {
            let mut g = self.graphs.lock().map_err(|_| OpError::from(poisoned()))?;
            g.capturing.take()
        };
        if open.is_some() {
            self.capturing.store(false, Ordering::Release);
            let _ = self.stream.end_capture(CUgraphInstantiate_flags(0));
        }
        let mut st = self.step.lock().map_err(|_| OpError::from(poisoned()))?;
        st.active = None;
        flushed
    }

    /// The device address of the step's ids, if `ids` are the active step's.
    pub(crate) fn step_ids(&self, ids: &[u32]) -> Option<u64> {
        let st = self.step.lock().ok()?;
        let (t, _) = st.active.as_ref()?;
        (t.as_slice() == ids).then(|| self.step_base(&st))?
    }

    /// The device address of the step's positions, if `positions` are the active step's.
    pub(crate) fn step_positions(&self, positions: &[u32]) -> Option<u64> {
        let st = self.step.lock().ok()?;
        let (t, p) = st.active.as_ref()?;
        let n = t.len() as u64;
        (p.as_slice() == positions).then(|| self.step_base(&st).map(|b| b + 4 * n))?
    }

    /// The device address of the step's positions[0], if it is `pos0`.
    pub(crate) fn step_pos0(&self, pos0: usize) -> Option<u64> {
        let st = self.step.lock().ok()?;
        let (t, p) = st.active.as_ref()?;
        let n = t.len() as u64;
        (p.first().map(|&v| v as usize) == Some(pos0))
            .then(|| self.step_base(&st).map(|b| b + 4 * n))?
    }

    fn step_base(&self, st: &StepState) -> Option<u64> {
        st.dev.as_ref().map(|d| d.device_ptr(&self.stream).0)
    }

    pub(crate) fn record_begin_impl(&self, key: u64) -> Result<bool> {
        self.flush()?;
        let active = self
            .step
            .lock()
            .map(|s| s.active.is_some())
            .unwrap_or(false);
        let epoch = self.epoch();
        let mut g = self.graphs.lock().map_err(|_| OpError::from(poisoned()))?;
        if g.disabled || !active || g.capturing.is_some() {
            return Ok(false);
        }
        if !g.warmed.contains(&(key, epoch)) {
            // Warm-up: run the ops plainly so that every buffer and kernel they need exists.
            g.warmed.retain(|&(_, e)| e == epoch);
            g.warmed.push((key, epoch));
            if g.warmed.len() > 4 * MAX_RECORDINGS {
                g.warmed.remove(0);
            }
            return Ok(false);
        }
        self.q8_forget_all();
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .ctx(|| "starting to record a step".into())?;
        g.capturing = Some((key, epoch));
        self.capturing.store(true, Ordering::Release);
        Ok(true)
    }

    pub(crate) fn record_end_impl(&self, key: u64) -> Result<()> {
        self.flush()?;
        let mut g = self.graphs.lock().map_err(|_| OpError::from(poisoned()))?;
        let Some((k, epoch)) = g.capturing.take() else {
            return Err(CudaError::Other(format!("record_end({key}) without record_begin")).into());
        };
        self.capturing.store(false, Ordering::Release);
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .ctx(|| "finishing the recording of a step".into())?
            .ok_or_else(|| CudaError::Other("the recorded step is empty".into()))?;
        if k != key || epoch != self.epoch() {
            return Err(CudaError::Other(format!(
                "recording {k} ended as {key}, or a buffer moved while recording"
            ))
            .into());
        }
        // The captured ops did not run: run them once now.
        graph.launch().ctx(|| "running a recorded step".into())?;
        g.clock += 1;
        let used = g.clock;
        g.recs.retain(|r| r.key != key);
        if g.recs.len() >= MAX_RECORDINGS {
            if let Some(i) = (0..g.recs.len()).min_by_key(|&i| g.recs[i].used) {
                g.recs.remove(i);
            }
        }
        g.recs.push(Recording {
            key,
            epoch,
            graph,
            used,
        });
        self.q8_forget_all();
        Ok(())
    }

    pub(crate) fn replay_impl(&self, key: u64) -> Result<bool> {
        self.flush()?;
        let epoch = self.epoch();
        let mut g = self.graphs.lock().map_err(|_| OpError::from(poisoned()))?;
        g.recs.retain(|r| r.epoch == epoch);
        g.clock += 1;
        let clock = g.clock;
        let Some(rec) = g.recs.iter_mut().find(|r| r.key == key) else {
            return Ok(false);
        };
        rec.used = clock;
        rec.graph
            .launch()
            .ctx(|| "replaying a recorded step".into())?;
        self.q8_forget_all();
        Ok(true)
    }

    /// A device address holding `vals`: the step buffer's (`step`) when the values are the
    /// active step's, else a fresh upload, returned so that it outlives the launch (and
    /// refused while recording: a recording must not hold a temporary).
    pub(crate) fn device_u32s(
        &self,
        step: Option<u64>,
        vals: &[u32],
        what: &str,
    ) -> Result<(u64, Option<CudaSlice<u32>>)> {
        if let Some(p) = step {
            return Ok((p, None));
        }
        self.not_capturing(what)?;
        let buf = self
            .stream
            .clone_htod(vals)
            .ctx(|| format!("uploading {what}"))?;
        let p = buf.device_ptr(&self.stream).0;
        Ok((p, Some(buf)))
    }
}
