//! Launcher of shaders/kv.wgsl: the paged KV cache's write.

use plumb_ops::{shapes, Result};

use crate::buffer::WgpuBuf;
use crate::device::WgpuBackend;
use crate::encoder::Bind;
use crate::pipeline::Kernel;
use crate::shaders;

impl WgpuBackend {
    pub(crate) fn kv_write_slots_impl(
        &self,
        src: &WgpuBuf,
        pool: &mut WgpuBuf,
        slots: &[u32],
        kv_dim: usize,
    ) -> Result<()> {
        shapes::kv_write_slots(src.len, pool.len, slots, kv_dim)?;
        let k = Kernel::new(shaders::KV, "kv_write_slots");
        let params = [slots.len() as u32, kv_dim as u32];
        let groups = (slots.len() * kv_dim).div_ceil(256);
        let binds = [Bind::r(src), Bind::w(pool)];
        self.op(|p, ctx| p.launch(ctx, &k, &params, slots, &binds, groups))
    }
}
