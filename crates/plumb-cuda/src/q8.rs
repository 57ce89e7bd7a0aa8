//! q8_1 activations of the decode matvec, and which buffer they currently describe.
//!
//! The matvec (kernels/matvec_q8.cu) reads its input x quantized to q8_1: `qs` (int8, one per
//! element) and `ds` ((d, d·Σq) per 32 elements). A few slots hold such copies, each tagged
//! with the device address and length of the f32 buffer it was made from:
//! - the ops that produce a matvec's input (rms_norm, add_rms_norm, swiglu) write the q8 copy
//!   alongside their output when it has ≤ MATVEC_MAX_N rows of a multiple of 32;
//! - `matmul` uses a valid copy of its x, else quantizes x into a slot (one extra launch);
//!   Wq, Wk and Wv share one copy of xn, Wgate and Wup another;
//! - every op forgets the copies of the buffers it writes, and any allocation or step
//!   boundary forgets them all (a new buffer may reuse a freed one's address).
//!
//! The tags live on the host and follow the order ops are queued in, which is the order the
//! stream runs them; inside a recorded step they are decided once, at recording time, and the
//! recording replays the same launches.

use cudarc::driver::DevicePtr;
use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::error::{CudaError, DriverContext};
use crate::launch::{poisoned, MATVEC_MAX_N};
use crate::state::Slot;

/// Slots: xn (attention and FFN inputs), the attention output, the FFN activation.
const SLOTS: usize = 3;

/// Device addresses of one slot's `qs` and `ds`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8Ptrs {
    pub qs: u64,
    pub ds: u64,
}

impl CudaBackend {
    /// Makes every slot hold at least `len` elements (called at weight upload, outside any
    /// recording; growing moves the slots, which bumps the epoch).
    pub(crate) fn q8_reserve(&self, len: usize) -> Result<()> {
        let mut st = self.q8.lock().map_err(|_| OpError::from(poisoned()))?;
        if st.cap >= len && st.slots.len() == SLOTS {
            return Ok(());
        }
        if self.is_capturing() {
            return Err(
                CudaError::Other("q8 activations grown while recording a step".into()).into(),
            );
        }
        let cap = len.max(st.cap).div_ceil(32) * 32;
        st.slots.clear();
        for _ in 0..SLOTS {
            let qs = self
                .stream
                .alloc_zeros::<i8>(cap)
                .ctx(|| "allocating q8 activations".into())?;
            let ds = self
                .stream
                .alloc_zeros::<f32>(cap / 16)
                .ctx(|| "allocating q8 scales".into())?;
            st.slots.push(Slot {
                key: 0,
                len: 0,
                valid: false,
                used: 0,
                qs,
                ds,
            });
        }
        st.cap = cap;
        self.bump_epoch();
        Ok(())
    }

    /// Forgets the q8 copy of the buffer at `ptr` (about to be written).
    pub(crate) fn q8_forget(&self, ptr: u64) {
        if let Ok(mut st) = self.q8.lock() {
            for s in st.slots.iter_mut().filter(|s| s.key == ptr) {
                s.valid = false;
            }
        }
    }

    pub(crate) fn q8_forget_all(&self) {
        if let Ok(mut st) = self.q8.lock() {
            for s in st.slots.iter_mut() {
                s.valid = false;
            }
        }
    }

    /// A slot for the q8 copy of `len` elements at `ptr`, marked valid (the caller queues the
    /// kernel that writes it), or None when `len` is not a multiple of 32 or exceeds the slots.
    /// `reuse`: whether a valid copy may be returned as is; the bool is true when it was.
    fn q8_slot(&self, ptr: u64, len: usize, reuse: bool) -> Option<(Q8Ptrs, bool)> {
        let mut st = self.q8.lock().ok()?;
        if len == 0 || !len.is_multiple_of(32) || len > st.cap {
            return None;
        }
        st.clock += 1;
        let clock = st.clock;
        let hit = st.slots.iter().position(|s| s.key == ptr);
        let i = match hit {
            Some(i) => i,
            None => (0..st.slots.len()).min_by_key(|&i| st.slots[i].used)?,
        };
        let stream = &self.stream;
        let s = &mut st.slots[i];
        let fresh = reuse && s.valid && s.key == ptr && s.len == len;
        s.key = ptr;
        s.len = len;
        s.valid = true;
        s.used = clock;
        let p = Q8Ptrs {
            qs: s.qs.device_ptr(stream).0,
            ds: s.ds.device_ptr(stream).0,
        };
        Some((p, fresh))
    }

    /// Where a producer op writes the q8 copy of its output (`rows` rows, `len` elements).
    pub(crate) fn q8_produce(&self, ptr: u64, rows: usize, len: usize) -> Option<Q8Ptrs> {
        if rows > MATVEC_MAX_N {
            self.q8_forget(ptr);
            return None;
        }
        match self.q8_slot(ptr, len, false) {
            Some((p, _)) => Some(p),
            None => {
                self.q8_forget(ptr);
                None
            }
        }
    }

    /// The q8 copy of the matvec input at `ptr` (`len` elements) and whether it must still be
    /// written (quantize_q8).
    pub(crate) fn q8_input(&self, ptr: u64, len: usize) -> Result<(Q8Ptrs, bool)> {
        match self.q8_slot(ptr, len, true) {
            Some((p, fresh)) => Ok((p, !fresh)),
            None => {
                self.q8_reserve(len)?;
                let (p, _) = self
                    .q8_slot(ptr, len, false)
                    .ok_or_else(|| CudaError::Other(format!("no q8 slot for {len} elements")))?;
                Ok((p, true))
            }
        }
    }
}
