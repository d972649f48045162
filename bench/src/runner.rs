//! The four variants behind one interface: tract through linesight's own
//! [`Engine`] (what the box runs), and onnxruntime through the `ort` crate with the
//! wheel's `libonnxruntime.so` loaded at run time.

use anyhow::{anyhow, Context, Result};
use linesight_edge::engine::Engine;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

/// One model in one runtime at one thread count, ready to run.
pub trait Runner {
    /// Runs one NCHW input and writes the logits.
    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<()>;
}

pub struct Tract {
    engine: Engine,
}

impl Tract {
    /// Plans `onnx` for `shape` with `threads` tract threads.
    pub fn new(onnx: &[u8], shape: &[usize], threads: usize, own_ops: bool) -> Result<Self> {
        let mut engine =
            Engine::with_own_ops(onnx, shape, own_ops).context("tract cannot load the model")?;
        engine.set_threads(threads)?;
        Ok(Tract { engine })
    }
}

impl Runner for Tract {
    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<()> {
        Ok(self.engine.infer(input, logits)?)
    }
}

pub struct Ort {
    session: Session,
    input_name: String,
    shape: Vec<i64>,
}

/// The process's onnxruntime environment, from the shared library at `lib`. Fails when the
/// library cannot be loaded or is older than the `ort` crate's API level.
pub fn ort_environment(lib: &std::path::Path) -> Result<ort::environment::Environment> {
    ort::init_from(lib)
        .with_context(|| format!("cannot load onnxruntime from `{}`", lib.display()))?
        .with_name("linesight-side-by-side")
        .build()
        .map_err(|e| anyhow!("cannot start onnxruntime: {e}"))
}

impl Ort {
    /// A session over `onnx` with `threads` intra-op threads, one inter-op thread, all
    /// graph optimisations, no spinning (tract does not spin either).
    pub fn new(
        env: &ort::environment::Environment,
        onnx: &[u8],
        shape: &[usize],
        threads: usize,
    ) -> Result<Self> {
        let e = |e: ort::Error<_>| anyhow!("onnxruntime session: {e}");
        let session = Session::builder(env)
            .map_err(|e| anyhow!("onnxruntime session: {e}"))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e)?
            .with_intra_threads(threads)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_intra_op_spinning(false)
            .map_err(e)?
            .commit_from_memory(onnx)
            .map_err(|e| anyhow!("onnxruntime cannot load the model: {e}"))?;
        let input_name = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .context("the model has no input")?;
        Ok(Ort {
            session,
            input_name,
            shape: shape.iter().map(|&d| d as i64).collect(),
        })
    }
}

impl Runner for Ort {
    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<()> {
        let tensor = TensorRef::from_array_view((self.shape.clone(), input))
            .map_err(|e| anyhow!("onnxruntime input: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| anyhow!("onnxruntime run: {e}"))?;
        let (_, out) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("onnxruntime output: {e}"))?;
        if out.len() != logits.len() {
            anyhow::bail!(
                "onnxruntime returned {} logits, expected {}",
                out.len(),
                logits.len()
            );
        }
        logits.copy_from_slice(out);
        Ok(())
    }
}
