//! Launcher of kernels/embedding.cu: rows of a table in any stored format, looked up by token
//! id (ids from the step's device buffer inside a step, src/step.rs).

use cudarc::driver::{CudaSlice, PushKernelArg};
use plumb_ops::shapes;
use plumb_ops::{OpError, Result};

use crate::compile::format_suffix;
use crate::device::CudaBackend;
use crate::error::DriverContext;
use crate::launch::{grid1, int};
use crate::weight::CudaWeight;

impl CudaBackend {
    pub(crate) fn embedding_impl(
        &self,
        table: &CudaWeight,
        ids: &[u32],
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let dim = table.cols;
        shapes::embedding((table.rows, dim), ids, out.len())?;
        if ids.is_empty() || dim == 0 {
            return Ok(());
        }
        let suffix = format_suffix(table.ty).ok_or_else(|| OpError::Unsupported {
            op: "embedding",
            what: table.ty.name().into(),
        })?;
        let (cols, row_bytes, vocab) = (
            int(dim, "embedding", "cols")?,
            int(table.row_bytes, "embedding", "row bytes")?,
            int(table.rows, "embedding", "vocab")?,
        );
        // Inside a step the ids come from the step's device buffer (src/step.rs).
        let (ids_ptr, _upload) = self.device_u32s(self.step_ids(ids), ids, "token ids")?;
        let f = self.func("embedding.cu", Some(suffix), &format!("embedding_{suffix}"))?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&table.data)
            .arg(&ids_ptr)
            .arg(out)
            .arg(&cols)
            .arg(&row_bytes)
            .arg(&vocab);
        // SAFETY: ids < rows (checked; the kernel also guards), ids_ptr holds ids.len() u32
        // (the step buffer or the upload kept alive in _upload), out holds ids.len() * cols
        // floats (checked), the table holds rows * row_bytes bytes (CudaWeight invariant); the
        // argument list matches embedding_* in embedding.cu.
        unsafe { b.launch(grid1(ids.len(), 128, 0)) }.ctx(|| "launching embedding".into())?;
        Ok(())
    }
}
