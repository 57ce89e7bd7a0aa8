//! Device buffers of activations and weights, each with an id that keys the bind groups made
//! for it (src/pipeline.rs). A dropped buffer reports its id so that its bind groups, which
//! would otherwise keep it alive, are forgotten.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use plumb_core::GgmlType;

use crate::weight::Format;

/// Ids of new buffers and the ids of dropped ones, shared by a backend and its buffers.
#[derive(Debug, Default)]
pub(crate) struct Ids {
    next: AtomicU64,
    dropped: Mutex<Vec<u64>>,
}

impl Ids {
    pub(crate) fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn drop_id(&self, id: u64) {
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
    }

    /// The ids dropped since the last call.
    pub(crate) fn take_dropped(&self) -> Vec<u64> {
        std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A device buffer and its id, dropped together.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) id: u64,
    ids: Arc<Ids>,
}

impl Tracked {
    pub(crate) fn new(buf: wgpu::Buffer, ids: &Arc<Ids>) -> Tracked {
        Tracked {
            buf,
            id: ids.next(),
            ids: ids.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ids.drop_id(self.id);
    }
}

/// f32 activations on the device: `len` values (the buffer holds at least one).
///
/// A small buffer made by `upload` also keeps its values on the host until a backend op
/// writes it (every write takes `&mut`, which drops the copy): rope reads its frequency
/// factors from there, to compute the angles in f64 (src/rope.rs).
#[derive(Debug)]
pub struct WgpuBuf {
    pub(crate) t: Tracked,
    pub(crate) len: usize,
    pub(crate) host: Option<Arc<[f32]>>,
}

impl WgpuBuf {
    /// Values in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Rows `row0 .. row0 + rows` of a weight, in one buffer.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) t: Tracked,
    pub(crate) row0: usize,
    pub(crate) rows: usize,
}

/// A weight on the device in its stored format, each block starting on a word
/// (shaders/formats.wgsl), or dequantized to f32 for the formats without shaders.
///
/// A weight larger than the adapter binds is split by rows into parts of whole rows, each its
/// own buffer, and every op launches once per part: Gemma 3's 262,144 × 640 Q8_0 embedding
/// (180 MiB on the device) is two parts on lavapipe, which binds 128 MiB.
#[derive(Debug)]
pub struct WgpuWeight {
    pub(crate) parts: Vec<Part>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) format: Format,
    /// Words from one row to the next.
    pub(crate) row_words: usize,
    /// The format the weight came in.
    pub stored: GgmlType,
}

impl WgpuWeight {
    /// The format the shaders read: the stored one, or F32 for a dequantized weight.
    pub fn device_format(&self) -> GgmlType {
        self.format.ty()
    }

    /// Buffers the weight takes: 1, or more for a weight larger than the adapter binds.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}
