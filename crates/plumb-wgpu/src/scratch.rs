//! The backend's own buffers, made once and grown when a larger call comes: the 8-bit
//! activations of the matvec (src/quantize.rs), argmax's token ids, and the staging buffer
//! every read from the device goes through.

use std::sync::{Arc, Mutex};

use plumb_ops::{OpError, Result};

use crate::buffer::Tracked;
use crate::device::WgpuBackend;

#[derive(Default)]
pub(crate) struct Scratch {
    q8: Option<Arc<Tracked>>,
    ids: Option<Arc<Tracked>>,
}

/// The staging buffer, held for the whole of a read.
#[derive(Default)]
pub(crate) struct Staging(Mutex<Option<wgpu::Buffer>>);

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl WgpuBackend {
    /// The 8-bit activation buffer, at least `bytes` long.
    pub(crate) fn q8_scratch(&self, bytes: u64) -> Result<Arc<Tracked>> {
        self.scratch_buf(bytes, "8-bit activations", |s| &mut s.q8)
    }

    /// The argmax result buffer, at least `bytes` long.
    pub(crate) fn ids_scratch(&self, bytes: u64) -> Result<Arc<Tracked>> {
        self.scratch_buf(bytes, "argmax ids", |s| &mut s.ids)
    }

    fn scratch_buf(
        &self,
        bytes: u64,
        what: &str,
        slot: impl FnOnce(&mut Scratch) -> &mut Option<Arc<Tracked>>,
    ) -> Result<Arc<Tracked>> {
        let mut s = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slot(&mut s);
        if let Some(b) = slot.as_ref().filter(|b| b.buf.size() >= bytes) {
            return Ok(b.clone());
        }
        let b = Arc::new(self.buffer(bytes.next_power_of_two(), STORAGE, what, None)?);
        *slot = Some(b.clone());
        Ok(b)
    }

    /// Submits what is pending, then copies the first `bytes` of `src` to the host.
    pub(crate) fn read(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            self.op(|_, _| Ok(()))?;
            return Ok(Vec::new());
        }
        let mut staging = self.staging.0.lock().unwrap_or_else(|e| e.into_inner());
        if staging.as_ref().is_none_or(|b| b.size() < bytes) {
            *staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: bytes.next_power_of_two().max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let Some(buf) = staging.as_ref() else {
            return Err(OpError::Device("no staging buffer".into()));
        };
        {
            let ctx = self.ctx();
            let mut p = self.lock_pending();
            p.copy(&self.device, src, 0, buf, 0, bytes);
            p.submit(&ctx)?;
        }
        self.check_errors()?;
        let slice = buf.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            // The receiver waits below; a send can fail only if it is gone.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| OpError::Device(format!("waiting for the device: {e}")))?;
        self.check_errors()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(OpError::Device(format!("mapping the result: {e}"))),
            Err(_) => return Err(OpError::Device("the device never mapped the result".into())),
        }
        let out = slice
            .get_mapped_range()
            .map_err(|e| OpError::Device(format!("reading the result: {e}")))?
            .to_vec();
        buf.unmap();
        Ok(out)
    }
}
