//! Launcher of kernels/elementwise.cu: `add`, `add_bias`, `swiglu` and `geglu` (which also
//! write the q8_1 copy of their output), `gelu`, `scale`, `softcap`, the KV-cache write of a step (held back inside a step, src/defer.rs)
//! and the q8_1 quantization of a matvec's input.

use cudarc::driver::{CudaSlice, DevicePtr, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::Result;

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, shape, stride_blocks, KvItem};
use crate::q8::Q8Ptrs;

impl CudaBackend {
    /// `cache[pos0 * kv_dim ..][.. n * kv_dim] = src[.. n * kv_dim]`, pos0 read on the device.
    pub(crate) fn kv_write_impl(
        &self,
        src: &CudaSlice<f32>,
        cache: &mut CudaSlice<f32>,
        pos0: usize,
        n: usize,
        kv_dim: usize,
    ) -> Result<()> {
        shapes::kv_write(src.len(), cache.len(), pos0, n, kv_dim)?;
        let len = n * kv_dim;
        if len == 0 {
            return Ok(());
        }
        let pos0_u32 = [u32::try_from(pos0).map_err(|_| shape("kv_write", "pos0".into()))?];
        let step_p0 = self.step_pos0(pos0);
        let in_step = step_p0.is_some();
        let (p0, _upload) = self.device_u32s(step_p0, &pos0_u32, "pos0")?;
        let item = KvItem {
            src: src.device_ptr(&self.stream).0,
            cache: cache.device_ptr(&self.stream).0,
            pos0: p0,
            n,
            kv_dim,
            capacity: cache.len() / kv_dim.max(1),
        };
        self.defer_kv_write(item, in_step)
    }

    /// `add` (x += y over len) or `add_bias` (x[r, :] += y[:dim] over len = rows * dim).
    pub(crate) fn elementwise_impl(
        &self,
        op: &'static str,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
        dim: usize,
    ) -> Result<()> {
        if op == "add_bias" {
            shapes::add_bias(x.len(), y.len(), len / dim.max(1), dim)?;
        } else {
            shapes::add(x.len(), y.len(), len)?;
        }
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        let dim32 = u32::try_from(dim).map_err(|_| shape(op, format!("dim {dim} too large")))?;
        let f = self.func("elementwise.cu", None, &format!("{op}_f32"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(y).arg(&len64);
        if op == "add_bias" {
            b.arg(&dim32);
        }
        // SAFETY: x holds len floats and y len (add) or dim (add_bias) (checked); the
        // argument lists match elementwise.cu.
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| format!("launching {op}"))?;
        Ok(())
    }

    /// `swiglu` or `geglu` (`op`): `out = act(gate) * up`.
    pub(crate) fn gated_impl(
        &self,
        op: &'static str,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::gated(op, gate.len(), up.len(), len, out.len())?;
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        // The q8 copy of `out` for the down projection (src/q8.rs): rows are unknown here, so
        // it is written for any len ≤ MATVEC_MAX_N rows' worth of q8 slot.
        let out_ptr = out.device_ptr(&self.stream).0;
        let q8 = self.q8_produce(out_ptr, 1, len);
        let (qs, ds) = q8.map(|p| (p.qs, p.ds)).unwrap_or((0, 0));
        let f = self.func("elementwise.cu", None, &format!("{op}_f32"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(gate).arg(up).arg(out).arg(&len64).arg(&qs).arg(&ds);
        // SAFETY: the three buffers hold len floats (checked); qs/ds are null or a q8 slot of
        // len values with len % 32 == 0 (q8_produce).
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| format!("launching {op}"))?;
        Ok(())
    }

    /// `gelu`: `out = gelu(x)` over `len` elements.
    pub(crate) fn gelu_impl(
        &self,
        x: &CudaSlice<f32>,
        len: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::unary("gelu", x.len(), len, out.len())?;
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        let f = self.func("elementwise.cu", None, "gelu_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(out).arg(&len64);
        // SAFETY: x and out hold len floats (checked); grid-stride loop.
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| "launching gelu".into())?;
        Ok(())
    }

    /// `scale` (x *= c) or `softcap` (x = c tanh(x / c)) in place over `len` elements.
    pub(crate) fn scalar_op_impl(
        &self,
        op: &'static str,
        x: &mut CudaSlice<f32>,
        c: f32,
        len: usize,
    ) -> Result<()> {
        shapes::unary(op, x.len(), len, len)?;
        if len == 0 {
            return Ok(());
        }
        let len64 = len as u64;
        let f = self.func("elementwise.cu", None, &format!("{op}_f32"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&c).arg(&len64);
        // SAFETY: x holds len floats (checked); grid-stride loop.
        unsafe { b.launch(grid1(stride_blocks(len), 256, 0)) }.ctx(|| format!("launching {op}"))?;
        Ok(())
    }

    pub(crate) fn launch_kv_write(&self, kv: &KvItem) -> Result<()> {
        let len = kv.n * kv.kv_dim;
        if len == 0 {
            return Ok(());
        }
        let (len64, kvd, cap) = (len as u64, kv.kv_dim as u32, kv.capacity as u64);
        let f = self.func("elementwise.cu", None, "kv_write_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&kv.src)
            .arg(&kv.cache)
            .arg(&kv.pos0)
            .arg(&len64)
            .arg(&kvd)
            .arg(&cap);
        // SAFETY: src holds len floats, the cache `cap` rows of kv_dim (checked by
        // kv_write_impl for the host's pos0; the kernel skips a device pos0 whose rows would
        // pass cap); pos0 points at one u32.
        unsafe { b.launch(grid1(len.div_ceil(256).clamp(1, 4096), 256, 0)) }
            .ctx(|| "launching kv_write".into())?;
        Ok(())
    }

    /// quantize_q8: the q8_1 copy of `len` floats at `x` into the slot `q8`, for a matvec whose
    /// input's producer did not write it (src/q8.rs).
    pub(crate) fn launch_quantize_q8(&self, x: u64, q8: Q8Ptrs, len: usize) -> Result<()> {
        let groups = (len / 32) as i32;
        let f = self.func("elementwise.cu", None, "quantize_q8")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&x).arg(&q8.qs).arg(&q8.ds).arg(&groups);
        // SAFETY: x holds len floats (n*cols, checked by matmul_impl when the item was made,
        // and alive until this launch: defer.rs); the slot holds at least len int8 and
        // len/32 float2 (q8_input); one warp per group of 32.
        unsafe { b.launch(grid1((len / 32).div_ceil(8), 256, 0)) }
            .ctx(|| "launching quantize_q8".into())?;
        Ok(())
    }
}
