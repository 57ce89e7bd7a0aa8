//! Launcher of kernels/rope.cu: `rope` (held back inside a step, src/defer.rs), and the
//! merged launch of a step's rope(q), rope(k), kv_write(k), kv_write(v) (`rope_kv_f32`).

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::{Result, RopeParams, RopeStyle};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, KvItem, RopeItem};

impl CudaBackend {
    pub(crate) fn rope_impl(
        &self,
        x: &mut CudaSlice<f32>,
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        p: RopeParams,
        freq_factors: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        let n = positions.len();
        let ff_len = freq_factors.map(|f| f.len());
        shapes::rope(x.len(), n, n_heads, head_dim, p.n_rot, ff_len)?;
        let half = p.n_rot / 2;
        let pairs = n * n_heads * half;
        if pairs == 0 {
            return Ok(());
        }
        // Inside a step the positions come from the step's device buffer (src/step.rs), and
        // the launch may be merged with its neighbours' (src/defer.rs).
        let step_pos = self.step_positions(positions);
        let in_step = step_pos.is_some();
        let (pos, _upload) = self.device_u32s(step_pos, positions, "positions")?;
        let item = RopeItem {
            x: x.device_ptr(&self.stream).0,
            pos,
            n,
            n_heads,
            head_dim,
            p,
            ff: freq_factors.map(|f| f.device_ptr(&self.stream).0),
        };
        self.defer_rope(item, in_step)
    }

    pub(crate) fn launch_rope(&self, r: &RopeItem) -> Result<()> {
        let half = r.p.n_rot / 2;
        let pairs = r.n * r.n_heads * half;
        if pairs == 0 {
            return Ok(());
        }
        let ints = [
            r.n as i32,
            r.n_heads as i32,
            r.head_dim as i32,
            r.p.n_rot as i32,
            (r.p.style == RopeStyle::Neox) as i32,
        ];
        let has_ff = r.ff.is_some() as i32;
        // Without factors the kernel never reads the pointer (has_ff = 0).
        let ff = r.ff.unwrap_or(r.pos);
        let f = self.func("rope.cu", None, "rope_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&r.x).arg(&r.pos).arg(&ff).arg(&has_ff);
        for a in &ints {
            b.arg(a);
        }
        b.arg(&r.p.theta);
        // SAFETY: x holds n*heads*head_dim floats, pos n u32, factors n_rot/2 floats (checked
        // by rope_impl when the item was made; alive until now: see the module doc); one
        // thread per pair, guarded by the pair count inside the kernel.
        unsafe { b.launch(grid1(pairs.div_ceil(256), 256, 0)) }.ctx(|| "launching rope".into())?;
        Ok(())
    }

    pub(crate) fn launch_rope_kv(
        &self,
        q: &RopeItem,
        k: &RopeItem,
        kw: &KvItem,
        vw: &KvItem,
    ) -> Result<()> {
        let half = q.p.n_rot / 2;
        let total = q.n * (q.n_heads + k.n_heads) * half + q.n * kw.kv_dim;
        let ints = [
            q.n as i32,
            q.n_heads as i32,
            k.n_heads as i32,
            q.head_dim as i32,
            q.p.n_rot as i32,
            (q.p.style == RopeStyle::Neox) as i32,
        ];
        let has_ff = q.ff.is_some() as i32;
        let ff = q.ff.unwrap_or(q.pos);
        let cap = kw.capacity.min(vw.capacity) as u64;
        let f = self.func("rope.cu", None, "rope_kv_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&q.x)
            .arg(&k.x)
            .arg(&vw.src)
            .arg(&kw.cache)
            .arg(&vw.cache);
        b.arg(&q.pos).arg(&ff).arg(&has_ff);
        for a in &ints {
            b.arg(a);
        }
        b.arg(&q.p.theta).arg(&cap);
        // SAFETY: as launch_rope for q and k and launch_kv_write for both caches (each item
        // was checked when made); rope_kv_pattern established that k's rope feeds the K write,
        // that both writes have n rows of kv_dim = n_kv_heads * head_dim at the step's pos0
        // = positions[0], and that the ropes share n, head_dim, parameters and positions.
        unsafe { b.launch(grid1(total.div_ceil(256), 256, 0)) }
            .ctx(|| "launching rope_kv".into())?;
        Ok(())
    }
}
