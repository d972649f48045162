//! The inference engine: an ONNX model loaded, optimized and planned by tract once, then
//! run many times.
//!
//! [`Engine::new`] does everything that can fail slowly (decode, optimize, plan, spawn the
//! state, warm up); [`Engine::infer`] only copies the input in and the logits out. The
//! trainer uses this same type for its export parity check and to compute the self-test
//! vectors, so what the box runs is what was checked at export.
//!
//! Threads: [`Engine::set_threads`] gives the engine its own tract executor (a rayon pool
//! of N threads for matrix products and large elementwise ops, tract-linalg's
//! `multithread-mm`); 1 (the default) runs everything on the calling thread. The executor
//! is installed around each run, so two engines in one process (hot swap) never share or
//! race on tract's global default.

use linesight_shared::bundle::Bundle;
use linesight_shared::manifest::{Manifest, SelfTestVector};
use linesight_shared::preprocess::Preprocessor;
use std::sync::Arc;
use std::time::Instant;
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;

/// The most threads [`Engine::set_threads`] accepts.
pub const MAX_THREADS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load the ONNX model: {0}")]
    Load(String),
    #[error("the model's output has {got} values but the manifest lists {expected} labels")]
    LabelCount { expected: usize, got: usize },
    #[error("input has {got} values, the model expects {expected}")]
    InputSize { expected: usize, got: usize },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("self-test vector {index}: {problem}")]
    SelfTest { index: usize, problem: String },
    #[error("{threads} threads: {problem}")]
    Threads { threads: usize, problem: String },
    #[error("the bundle's manifest is not usable: {0}")]
    Manifest(String),
}

thread_local! {
    static IN_INFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread is inside [`Engine::infer`]. Lets an allocation counter tell
/// tract's allocations (its input tensor and intermediate results, per run) from the
/// caller's (see `tests/alloc.rs`). Reading it never allocates.
pub fn in_infer() -> bool {
    IN_INFER.try_with(|c| c.get()).unwrap_or(false)
}

/// Marks the thread as inside `infer` until dropped.
struct InferScope;

impl InferScope {
    fn enter() -> Self {
        IN_INFER.with(|c| c.set(true));
        InferScope
    }
}

impl Drop for InferScope {
    fn drop(&mut self) {
        IN_INFER.with(|c| c.set(false));
    }
}

fn load_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("{e:#}"))
}

fn run_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Run(format!("{e:#}"))
}

/// A planned, runnable model with its state.
pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    /// The input tensor, reused run after run: tract drops its references at the end of a
    /// run, so the next one writes into the same buffer instead of allocating it again.
    input: Arc<Tensor>,
    input_shape: Vec<usize>,
    input_len: usize,
    output_len: usize,
    executor: Executor,
    threads: usize,
}

/// Time spent in one node of the plan during one [`Engine::profile`] run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeTime {
    /// The node's name in the optimized model.
    pub node: String,
    /// The op's name and its first output's type, e.g. `OptMatMul -> I32`: what
    /// [`Engine::profile`] callers group by.
    pub op: String,
    /// The op's own description (tract's `Op::info`: kernel, layout, fused ops) and its
    /// first output's shape.
    pub info: String,
    pub ms: f64,
}

impl Engine {
    /// Loads ONNX bytes for a fixed input shape (e.g. `[1, 3, 224, 224]`), optimizes and
    /// plans it, and runs it once on zeros so the first real frame is not slower.
    pub fn new(onnx: &[u8], input_shape: &[usize]) -> Result<Self, EngineError> {
        Self::with_own_ops(onnx, input_shape, true)
    }

    /// [`Engine::new`], with linesight's own ops put into tract's graph ([`crate::kernels`];
    /// where this CPU has them) or not (`own_ops` false: tract's plan alone, for
    /// side-by-side measurements).
    pub fn with_own_ops(
        onnx: &[u8],
        input_shape: &[usize],
        own_ops: bool,
    ) -> Result<Self, EngineError> {
        let mut reader = std::io::Cursor::new(onnx);
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut reader)
            .map_err(load_err)?
            .with_input_fact(0, f32::fact(input_shape).into())
            .map_err(load_err)?
            .into_typed()
            .map_err(load_err)?
            .into_decluttered()
            .map_err(load_err)?;
        if own_ops {
            crate::kernels::graph::rewrite(&mut model).map_err(load_err)?;
        }
        let model = model.into_optimized().map_err(load_err)?;
        let plan = model.into_runnable().map_err(load_err)?;
        let state = plan.spawn().map_err(load_err)?;
        let input_len = input_shape.iter().product();
        let input = Arc::new(Tensor::zero::<f32>(input_shape).map_err(load_err)?);
        let mut engine = Engine {
            plan,
            state,
            input,
            input_shape: input_shape.to_vec(),
            input_len,
            output_len: 0,
            executor: Executor::SingleThread,
            threads: 1,
        };
        engine.output_len = engine.run_with(&vec![0.0; input_len], |l| Ok(l.len()))?;
        Ok(engine)
    }

    /// Loads the model of a verified bundle and checks it against the manifest.
    /// Fails when the manifest's preprocessing is out of range
    /// ([`linesight_shared::manifest::PreprocessSpec::check`]), the model does not load or
    /// its output does not match the labels.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, EngineError> {
        bundle
            .manifest
            .preprocess
            .check()
            .map_err(EngineError::Manifest)?;
        let shape = bundle.manifest.preprocess.input_shape();
        let engine = Self::new(&bundle.model, &shape)?;
        if engine.output_len != bundle.manifest.labels.len() {
            return Err(EngineError::LabelCount {
                expected: bundle.manifest.labels.len(),
                got: engine.output_len,
            });
        }
        Ok(engine)
    }

    pub fn input_len(&self) -> usize {
        self.input_len
    }

    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Threads tract uses for this engine's runs (1: the calling thread only).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs this engine's inference on `threads` threads from now on: 1 = on the caller's
    /// thread, N > 1 = a pool of N threads that this engine owns. Fails when `threads` is
    /// 0 or above [`MAX_THREADS`], or when the pool cannot be started.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), EngineError> {
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(EngineError::Threads {
                threads,
                problem: format!("the thread count must be 1..={MAX_THREADS}"),
            });
        }
        self.executor = if threads == 1 {
            Executor::SingleThread
        } else {
            // tract panics when the pool cannot be built (e.g. no more threads allowed).
            std::panic::catch_unwind(|| Executor::multithread_with_name(threads, "linesight-tract"))
                .map_err(|_| EngineError::Threads {
                    threads,
                    problem: "cannot start the thread pool".into(),
                })?
        };
        self.threads = threads;
        Ok(())
    }

    /// The optimized tract model (for inspection and plan checks).
    pub fn model(&self) -> &TypedModel {
        self.plan.model()
    }

    /// Runs one input and hands the output logits to `f` (the one place that talks to
    /// tract's state).
    fn run_with<R>(
        &mut self,
        input: &[f32],
        f: impl FnOnce(&[f32]) -> Result<R, EngineError>,
    ) -> Result<R, EngineError> {
        if input.len() != self.input_len {
            return Err(EngineError::InputSize {
                expected: self.input_len,
                got: input.len(),
            });
        }
        let t = self.input_value(input)?;
        let state = &mut self.state;
        let result = multithread_tract_scope(self.executor.clone(), || state.run(tvec!(t)))
            .map_err(run_err)?;
        let logits = result[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(run_err)?;
        f(logits)
    }

    /// `input` as tract's input value, in the engine's own input tensor when tract holds no
    /// reference to it any more (every run after the first), else in a new one.
    fn input_value(&mut self, input: &[f32]) -> Result<TValue, EngineError> {
        if Arc::get_mut(&mut self.input).is_none() {
            self.input = Arc::new(Tensor::zero::<f32>(&self.input_shape).map_err(run_err)?);
        }
        let t = Arc::get_mut(&mut self.input).expect("just made exclusive");
        let mut view = t.try_as_plain_ram_mut().map_err(run_err)?;
        view.as_slice_mut::<f32>()
            .map_err(run_err)?
            .copy_from_slice(input);
        Ok(self.input.clone().into_tvalue())
    }

    /// Runs one preprocessed NCHW input and writes the logits into `logits`
    /// (length [`Engine::output_len`]).
    pub fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<(), EngineError> {
        let _scope = InferScope::enter();
        self.run_with(input, |out| {
            if out.len() != logits.len() {
                return Err(EngineError::Run(format!(
                    "model returned {} logits, caller expected {}",
                    out.len(),
                    logits.len()
                )));
            }
            logits.copy_from_slice(out);
            Ok(())
        })
    }

    /// Runs one input with a clock around every node of the plan (not the hot path: it
    /// allocates). The times are those of one run, in plan order.
    pub fn profile(&mut self, input: &[f32]) -> Result<Vec<NodeTime>, EngineError> {
        if input.len() != self.input_len {
            return Err(EngineError::InputSize {
                expected: self.input_len,
                got: input.len(),
            });
        }
        let t = self.input_value(input)?;
        let mut times = Vec::new();
        let state = &mut self.state;
        multithread_tract_scope(self.executor.clone(), || {
            state.run_plan_with_eval(tvec!(t), |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let (dt, shape) = node
                    .outputs
                    .first()
                    .map(|o| {
                        (
                            format!("{:?}", o.fact.datum_type),
                            format!("{:?}", o.fact.shape),
                        )
                    })
                    .unwrap_or_default();
                let info = node.op().info().unwrap_or_default().join("; ");
                times.push(NodeTime {
                    node: node.name.clone(),
                    op: format!("{} -> {dt}", node.op().name()),
                    info: format!("{shape} {info}"),
                    ms,
                });
                out
            })
        })
        .map_err(run_err)?;
        Ok(times)
    }

    /// Runs every self-test vector of a manifest and compares the logits.
    /// Returns the largest absolute difference seen.
    pub fn self_test(&mut self, manifest: &Manifest) -> Result<f32, EngineError> {
        let mut pre = Preprocessor::new(manifest.preprocess);
        let mut input = vec![0.0; self.input_len];
        let mut logits = vec![0.0; self.output_len];
        let mut worst = 0f32;
        for (index, v) in manifest.self_test.iter().enumerate() {
            check_vector(&mut pre, self, v, &mut input, &mut logits)
                .map_err(|problem| EngineError::SelfTest { index, problem })?;
            let d = max_abs_diff(&logits, &v.expected_logits);
            // Written so that a NaN difference fails too.
            let within = matches!(
                d.partial_cmp(&v.tolerance),
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            );
            if !within {
                return Err(EngineError::SelfTest {
                    index,
                    problem: format!(
                        "logits differ from the expected ones by {d:.3e} (tolerance {:.1e}); this model does not compute on this box what it computed at export",
                        v.tolerance
                    ),
                });
            }
            worst = worst.max(d);
        }
        Ok(worst)
    }
}

fn check_vector(
    pre: &mut Preprocessor,
    engine: &mut Engine,
    v: &SelfTestVector,
    input: &mut [f32],
    logits: &mut [f32],
) -> Result<(), String> {
    if v.expected_logits.len() != logits.len() {
        return Err(format!(
            "expects {} logits, the model has {}",
            v.expected_logits.len(),
            logits.len()
        ));
    }
    pre.normalize_crop(&v.rgb, input)
        .map_err(|e| e.to_string())?;
    engine.infer(input, logits).map_err(|e| e.to_string())
}

/// Largest absolute elementwise difference (NaN counts as infinitely different).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}
