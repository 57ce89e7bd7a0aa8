//! Launcher of kernels/argmax.cu: the greedy id of each row, one block per row, the ids
//! (not the logits) copied to the host.

use cudarc::driver::{CudaSlice, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::{OpError, Result};

use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, poisoned, shape};

impl CudaBackend {
    /// The argmax of each of `rows` rows of `len` floats: one block per row (argmax.cu), then
    /// `rows` ids to the host.
    pub(crate) fn argmax_impl(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        len: usize,
    ) -> Result<Vec<u32>> {
        shapes::argmax(x.len(), rows, len)?;
        if len == 0 || rows == 0 {
            return Ok(vec![0; rows]);
        }
        let len32 =
            u32::try_from(len).map_err(|_| shape("argmax", format!("len {len} too large")))?;
        u32::try_from(rows).map_err(|_| shape("argmax", format!("{rows} rows too many")))?;
        let mut scratch = self.scratch.lock().map_err(|_| OpError::from(poisoned()))?;
        let result = self.ensure_len(&mut scratch.result, rows)?;
        let f = self.func("argmax.cu", None, "argmax_f32")?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&len32).arg(&*result);
        // SAFETY: x holds rows*len floats (checked), result at least rows u32 (ensure_len);
        // block b reads row b and writes result[b] (argmax.cu).
        unsafe { b.launch(grid1(rows, 1024, 0)) }.ctx(|| "launching argmax".into())?;
        let mut host = vec![0u32; rows];
        self.stream
            .memcpy_dtoh(&result.slice(0..rows), &mut host)
            .ctx(|| "reading the argmax".into())?;
        self.stream
            .synchronize()
            .ctx(|| "waiting for argmax".into())?;
        Ok(host)
    }
}
