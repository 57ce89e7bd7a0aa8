//! Launcher of shaders/argmax.wgsl: greedy token ids computed on the device, so that only
//! `rows` ids come back.

use plumb_ops::{shapes, Result};

use crate::buffer::{Tracked, WgpuBuf};
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

impl WgpuBackend {
    pub(crate) fn argmax_impl(&self, x: &WgpuBuf, rows: usize, len: usize) -> Result<Vec<u32>> {
        shapes::argmax(x.len, rows, len)?;
        if rows == 0 || len == 0 {
            return Ok(vec![0; rows]);
        }
        let bytes = (rows * 4) as u64;
        let ids: std::sync::Arc<Tracked> = self.ids_scratch(bytes)?;
        let k = Kernel::new(shaders::ARGMAX, "argmax");
        let params = [rows as u32, len as u32];
        let binds = [Bind::r(x), Bind::tracked(&ids, true)];
        self.op(|p, ctx| p.launch(ctx, &k, &params, &[], &binds, rows))?;
        let raw = self.read(&ids.buf, bytes)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}
