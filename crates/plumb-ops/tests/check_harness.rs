//! The harness must catch what it exists to catch: an unwritten element, a wrong answer, and an
//! unsupported case reported as SKIP rather than PASS.

use plumb_core::HostWeight;
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::{AttnParams, Backend, OpError, ReferenceBackend, Result, RopeParams};

/// The reference with three defects: matmul leaves its last output unwritten, swiglu is off
/// by a little, and rope is "unsupported".
struct Broken(ReferenceBackend);

impl Backend for Broken {
    type Buf = Vec<f32>;
    type Weight = HostWeight;
    fn name(&self) -> &'static str {
        "broken"
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        self.0.alloc(len)
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        self.0.upload(data)
    }
    fn download(&self, buf: &Vec<f32>, out: &mut [f32]) -> Result<()> {
        self.0.download(buf, out)
    }
    fn upload_weight(&self, w: &HostWeight) -> Result<HostWeight> {
        self.0.upload_weight(w)
    }
    fn copy(
        &self,
        s: &Vec<f32>,
        so: usize,
        d: &mut Vec<f32>,
        doff: usize,
        len: usize,
    ) -> Result<()> {
        self.0.copy(s, so, d, doff, len)
    }
    fn embedding(&self, t: &HostWeight, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        self.0.embedding(t, ids, out)
    }
    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.0.rms_norm(x, w, eps, rows, dim, out)
    }
    fn add_rms_norm(
        &self,
        r: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.0.add_rms_norm(r, x, w, eps, rows, dim, out)
    }
    fn matmul(&self, w: &HostWeight, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let mut tmp = vec![0f32; n * w.rows];
        self.0.matmul(w, x, n, &mut tmp)?;
        let last = n * w.rows - 1;
        out[..last].copy_from_slice(&tmp[..last]);
        Ok(())
    }
    fn add_bias(&self, x: &mut Vec<f32>, b: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        self.0.add_bias(x, b, rows, dim)
    }
    fn rope(
        &self,
        _: &mut Vec<f32>,
        _: &[u32],
        _: usize,
        _: usize,
        _: RopeParams,
        _: Option<&Vec<f32>>,
    ) -> Result<()> {
        Err(OpError::Unsupported {
            op: "rope",
            what: "anything".into(),
        })
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        p: AttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.0.attention(q, k, v, p, out)
    }
    fn swiglu(&self, g: &Vec<f32>, u: &Vec<f32>, len: usize, out: &mut Vec<f32>) -> Result<()> {
        self.0.swiglu(g, u, len, out)?;
        for v in out.iter_mut().take(len) {
            *v *= 1.001;
        }
        Ok(())
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        self.0.add(x, y, len)
    }
}

#[test]
fn harness_fails_unwritten_and_wrong_outputs_and_skips_unsupported() {
    let b = Broken(ReferenceBackend::default());
    let opts = CheckOptions {
        op: None,
        seed: 3,
        quick: true,
    };
    let results = check::run(&b, &opts, &mut |_| {});
    let status_of = |op: &str| {
        results
            .iter()
            .filter(|r| r.op == op)
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    assert!(
        status_of("matmul").iter().all(|s| *s == Status::Fail),
        "an unwritten element must fail"
    );
    assert!(
        status_of("swiglu").iter().all(|s| *s == Status::Fail),
        "0.1% error must fail swiglu"
    );
    assert!(status_of("rope").iter().all(|s| *s == Status::Skip));
    assert!(status_of("attention").iter().all(|s| *s == Status::Pass));
    let (pass, fail, skip) = check::summarize(&results);
    assert!(pass > 0 && fail > 0 && skip > 0);
}
