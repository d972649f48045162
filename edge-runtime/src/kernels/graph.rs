//! Puts linesight's own ops into tract's decluttered model, before tract optimises it.
//!
//! One rule: a 1x1 convolution — after declutter an `EinSum` contracting the channel of
//! `x` against constant f32 weights `[O, I]`, optionally followed by its bias `Add` and
//! ReLU6's `Max` / `Min` with constants — becomes one [`Pointwise`] op running
//! [`super::pointwise`]'s kernel: weights packed once here, the activation read in place on
//! every run, bias and clamp applied before the one store. Applied only where that kernel is
//! vectorised (x86-64 with AVX-512F): everywhere else, ARM64 boxes included, tract's own
//! matmul path runs, unchanged.
//!
//! The depthwise convolutions turn channel-last in tract's own declutter once
//! [`super::depthwise`] is registered; the 1x1 convolutions around them absorb the layout
//! change (channel-first in, channel-last out before a depthwise convolution, the other way
//! after it), so the op takes either layout on either side.

use super::pointwise::{self, Epilogue, Layout, PackedWeights, Rows};
use super::pointwise_i8::{self, PackedI8, QuantEpilogue, ROUND_MAGIC};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;

/// What a [`Pointwise`] op computes: f32 weights ([`super::pointwise`]), or int8 weights
/// with the activation quantised on the fly ([`super::pointwise_i8`]).
#[derive(Debug, Clone, PartialEq)]
enum Kernel {
    F32(Arc<PackedWeights>, Arc<Epilogue>),
    I8(Arc<PackedI8>, Arc<QuantEpilogue>),
}

/// A 1x1 convolution with a fused epilogue (bias and clamp; for int8 the rescale too), each
/// side channel-first or channel-last.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise {
    kernel: Kernel,
    x_layout: Layout,
    y_layout: Layout,
    positions: usize,
    out_shape: TVec<usize>,
}

impl Eq for Pointwise {}

impl Pointwise {
    /// (input channels, output channels, clamp low, clamp high).
    fn dims(&self) -> (usize, usize, f32, f32) {
        match &self.kernel {
            Kernel::F32(w, e) => (w.cin, w.cout, e.lo, e.hi),
            Kernel::I8(w, e) => (w.cin, w.cout, e.lo, e.hi),
        }
    }
}

/// Positions per task when tract's executor has several threads.
const ROWS_PER_TASK: usize = 48;

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        match self.kernel {
            Kernel::F32(..) => "LinesightPointwise".into(),
            Kernel::I8(..) => "LinesightPointwiseI8".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let (cin, cout, lo, hi) = self.dims();
        let int8 = if matches!(self.kernel, Kernel::I8(..)) {
            "int8 "
        } else {
            ""
        };
        Ok(vec![format!(
            "{int8}{cin}x{cout} {:?} -> {:?}, {} positions, clamp [{lo}, {hi}]",
            self.x_layout, self.y_layout, self.positions,
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let (cin, cout, _, _) = self.dims();
        ensure!(
            x.len() == self.positions * cin,
            "input {:?} is not {} x {cin}",
            x.shape(),
            self.positions
        );
        // SAFETY: every element is written by the kernel before the tensor is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(&self.out_shape)? };
        let xs = x.try_as_plain_ram()?;
        let xs = xs.as_slice::<f32>()?;
        let y_addr = {
            let mut view = y.try_as_plain_ram_mut()?;
            view.as_slice_mut::<f32>()?.as_mut_ptr() as usize
        };
        par_rows(self.positions, cin * cout, |first, rows| {
            let r = Rows {
                x: xs,
                x_layout: self.x_layout,
                positions: self.positions,
                first,
                rows,
            };
            let y = y_addr as *mut f32;
            // SAFETY: `y` holds positions x cout values; tasks write disjoint rows; the int8
            // rule admits `cin <= MAX_CIN` only.
            unsafe {
                match &self.kernel {
                    Kernel::F32(w, e) => pointwise::run(&r, w, e, y, self.y_layout),
                    Kernel::I8(w, e) => pointwise_i8::run(&r, w, e, y, self.y_layout),
                }
            }
        })?;
        Ok(tvec!(y.into_tvalue()))
    }
}

/// Runs `rows(first, count)` over `positions` in blocks of [`ROWS_PER_TASK`], split among
/// tract's executor threads (`work_per_row`: multiply-adds per position, tract's cost hint).
fn par_rows(
    positions: usize,
    work_per_row: usize,
    rows: impl Fn(usize, usize) + Send + Sync,
) -> TractResult<()> {
    // Row blocks as a slice of `()` (no allocation) for tract's executor to split.
    let mut blocks = vec![(); positions.div_ceil(ROWS_PER_TASK)];
    tract_linalg::multithread::par_chunks_mut(
        &mut blocks,
        1,
        positions * work_per_row,
        |first, chunk| {
            let start = first * ROWS_PER_TASK;
            rows(start, (chunk.len() * ROWS_PER_TASK).min(positions - start));
            Ok(())
        },
    )
}

impl TypedOp for Pointwise {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (cin, cout, _, _) = self.dims();
        let dt = match self.kernel {
            Kernel::F32(..) => f32::datum_type(),
            Kernel::I8(..) => i8::datum_type(),
        };
        Ok(tvec!((
            Cost::FMA(dt),
            (self.positions * cin * cout).to_dim()
        )))
    }

    as_op!();
}

/// The constant of a binary op's other input, when it is one.
fn other_const<'a>(model: &'a TypedModel, node: &TypedNode, from: OutletId) -> Option<&'a Tensor> {
    let other = node.inputs.iter().find(|i| **i != from)?;
    model.outlet_fact(*other).ok()?.konst.as_deref()
}

/// Where the channel of a `shape` sits among its non-unit axes (`others`: the positions of
/// the non-channel axes): after all of them, before all of them, or neither.
fn layout_of(shape: &[usize], channel: usize, others: &[usize]) -> Option<Layout> {
    let non_unit: Vec<usize> = others.iter().copied().filter(|&a| shape[a] != 1).collect();
    if non_unit.iter().all(|&a| a < channel) {
        Some(Layout::ChannelLast)
    } else if non_unit.iter().all(|&a| a > channel) {
        Some(Layout::ChannelFirst)
    } else {
        None
    }
}

/// The geometry of a 1x1-convolution einsum: `x` axes with one contracted channel `I`
/// (weights `[O, I]`), the output with `O` in its place and every other axis in the same
/// order (`quantized`: tract's integer einsum of `ConvInteger`, whose extra inputs, zero
/// points and scales, are not looked at here). Axes of size 1 may sit on one side only (tract's declutter drops the batch axis
/// of `N = 1` on the channel-last side of a depthwise convolution). Returns (input channel
/// axis, output channel axis, the other axes in x, in y).
#[allow(clippy::type_complexity)]
fn pointwise_axes(
    op: &EinSum,
    quantized: bool,
    x_shape: &[usize],
    y_shape: &[usize],
) -> Option<(usize, usize, Vec<usize>, Vec<usize>)> {
    let want = if quantized {
        (Some(i32::datum_type()), i32::datum_type())
    } else {
        (None, f32::datum_type())
    };
    if (op.q_params, op.operating_dt) != want {
        return None;
    }
    let (mut ci, mut co) = (None, None);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut x_unit = 0;
    for a in op.axes.iter_all_axes() {
        match (&a.inputs[0][..], &a.inputs[1][..], &a.outputs[0][..]) {
            ([x], [1], []) => ci = Some(*x),
            ([], [0], [y]) => co = Some(*y),
            ([x], [], [y]) => {
                xs.push(*x);
                ys.push(*y);
            }
            ([x], [], []) if x_shape.get(*x) == Some(&1) => x_unit += 1,
            ([], [], [y]) if y_shape.get(*y) == Some(&1) => {}
            _ => return None,
        }
    }
    if xs.len() + x_unit + 1 != x_shape.len() {
        return None;
    }
    // The other axes keep their order: sorted by input position, output positions ascend.
    let mut pairs: Vec<(usize, usize)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    pairs.sort();
    if pairs.windows(2).any(|w| w[0].1 > w[1].1) {
        return None;
    }
    Some((ci?, co?, xs, ys))
}

/// Where a 1x1 convolution's channels and positions sit, as both rules need it.
struct Geometry {
    /// The output's channel axis (where the epilogue's per-channel constants apply).
    co: usize,
    cout: usize,
    cin: usize,
    x_layout: Layout,
    y_layout: Layout,
    /// Pixels per image (the product of the non-channel axes).
    positions: usize,
}

/// [`pointwise_axes`] checked against the weights `[O, I]` (any other rank: `None`) and both
/// layouts: `None` where the einsum is not a 1x1 convolution the kernels run.
fn geometry(
    op: &EinSum,
    quantized: bool,
    x_shape: &[usize],
    y_shape: &[usize],
    w_shape: &[usize],
) -> Option<Geometry> {
    let &[cout, cin] = w_shape else {
        return None;
    };
    let (ci, co, xs, ys) = pointwise_axes(op, quantized, x_shape, y_shape)?;
    if x_shape[ci] != cin || y_shape[co] != cout {
        return None;
    }
    Some(Geometry {
        co,
        cout,
        cin,
        x_layout: layout_of(x_shape, ci, &xs)?,
        y_layout: layout_of(y_shape, co, &ys)?,
        positions: xs.iter().map(|&a| x_shape[a]).product(),
    })
}

/// What follows a 1x1 convolution and can be applied before its store: a per-channel or
/// scalar scale (`Mul`, only when `scale` is asked for: the int8 rescale), the bias `Add`,
/// ReLU6's `Max` / `Min` by a scalar.
struct Absorbed {
    scale: Option<Vec<f32>>,
    bias: Vec<f32>,
    lo: f32,
    hi: f32,
}

/// Absorbs what follows `node` while it is one consumer, a binary op with an f32 constant,
/// in the order scale, bias, clamp (`co`: the output's channel axis in `y_shape`). Returns
/// the fused epilogue and the last node absorbed (`node` itself when none).
fn absorb_epilogue<'m>(
    model: &'m TypedModel,
    node: &'m TypedNode,
    y_shape: &[usize],
    co: usize,
    cout: usize,
    scale: bool,
) -> TractResult<(Absorbed, &'m TypedNode)> {
    let mut e = Absorbed {
        scale: None,
        bias: vec![0.0; cout],
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
    let mut last = node;
    let mut bias_taken = false;
    loop {
        let Some(succ) = model.single_succ(last.id)? else {
            break;
        };
        let Some(bin) = succ.op_as::<TypedBinOp>() else {
            break;
        };
        let Some(k) = other_const(model, succ, last.id.into()) else {
            break;
        };
        if k.datum_type() != f32::datum_type() || k.rank() > y_shape.len() {
            break;
        }
        let vals = k.try_as_plain_ram()?;
        let vals = vals.as_slice::<f32>()?;
        // Right-aligned broadcast: k's axis j is the output's axis j + shift.
        let shift = y_shape.len() - k.rank();
        let on_channel = k
            .shape()
            .iter()
            .enumerate()
            .all(|(j, d)| *d == 1 || j + shift == co);
        let per_channel = |v: &[f32]| -> Vec<f32> {
            if v.len() == 1 {
                vec![v[0]; cout]
            } else {
                v.to_vec()
            }
        };
        let fresh = !bias_taken && e.lo.is_infinite() && e.hi.is_infinite();
        match bin.0.name() {
            "Mul"
                if scale
                    && e.scale.is_none()
                    && fresh
                    && (k.len() == cout || k.len() == 1)
                    && on_channel =>
            {
                e.scale = Some(per_channel(vals));
            }
            "Add" if fresh && (k.len() == cout || k.len() == 1) && on_channel => {
                e.bias = per_channel(vals);
                bias_taken = true;
            }
            "Max" if k.len() == 1 && e.hi.is_infinite() => {
                e.lo = e.lo.max(vals[0]);
            }
            "Min" if k.len() == 1 => {
                e.hi = e.hi.min(vals[0]);
            }
            _ => break,
        }
        last = succ;
    }
    Ok((e, last))
}

fn pointwise_rule(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    op: &EinSum,
) -> TractResult<Option<TypedModelPatch>> {
    rule_if!(node.inputs.len() == 2);
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let w_fact = model.outlet_fact(node.inputs[1])?;
    let y_fact = model.outlet_fact(node.id.into())?;
    rule_if!(x_fact.datum_type == f32::datum_type());
    rule_if_some!(w = w_fact.konst.as_ref());
    rule_if!(w.rank() == 2 && w.datum_type() == f32::datum_type());
    rule_if_some!(x_shape = x_fact.shape.as_concrete());
    rule_if_some!(y_shape = y_fact.shape.as_concrete());
    rule_if_some!(g = geometry(op, false, x_shape, y_shape, w.shape()));
    let weights = PackedWeights::from_oi(w.try_as_plain_ram()?.as_slice::<f32>()?, g.cout, g.cin);
    let (epilogue, last) = absorb_epilogue(model, node, y_shape, g.co, g.cout, false)?;
    let epilogue = Epilogue {
        bias: epilogue.bias,
        lo: epilogue.lo,
        hi: epilogue.hi,
    };
    let op = Pointwise {
        kernel: Kernel::F32(Arc::new(weights), Arc::new(epilogue)),
        x_layout: g.x_layout,
        y_layout: g.y_layout,
        positions: g.positions,
        out_shape: y_shape.into(),
    };
    replace(model, name, node.inputs[0], last, op)
}

/// The patch that feeds `x` to `op` (named `name`) in place of everything up to `last`.
fn replace(
    model: &TypedModel,
    name: &str,
    x: OutletId,
    last: &TypedNode,
    op: Pointwise,
) -> TractResult<Option<TypedModelPatch>> {
    let mut patch = TypedModelPatch::new(format!("linesight {}", op.name()));
    let x = patch.tap_model(model, x)?;
    let y = patch.wire_node(name, op, &[x])?;
    patch.shunt_outside(model, last.id.into(), y[0])?;
    Ok(Some(patch))
}

/// The single f32 value of a constant, when it is one.
fn scalar_f32(t: &Tensor) -> Option<f32> {
    if t.datum_type() != f32::datum_type() || t.len() != 1 {
        return None;
    }
    t.try_as_plain_ram()
        .ok()?
        .as_slice::<f32>()
        .ok()
        .map(|v| v[0])
}

/// What the exporter's quantisation of an activation does: `x * inv_scale + offset`,
/// rounded, clipped ([`pointwise_i8::quantize`]).
struct QuantisedInput {
    x: OutletId,
    inv_scale: f32,
    offset: f32,
}

/// Walks back from an int8 einsum's activation through the exporter's quantisation, each
/// node the only consumer of the one before: `Cast` to i8 <- `Min` 127 <- `Max` -127 <-
/// `Sub` 1.5 * 2^23 <- `Add` 1.5 * 2^23 + offset (offset a whole number in -127..=127;
/// -127 for a non-negative activation) <- `Mul` by 1/scale.
fn quantised_input(model: &TypedModel, einsum: &TypedNode) -> TractResult<Option<QuantisedInput>> {
    let mut outlet = einsum.inputs[0];
    rule_if!(model.outlet_successors(outlet).len() == 1);
    let cast = model.node(outlet.node);
    rule_if_some!(c = cast.op_as::<Cast>());
    rule_if!(c.to == i8::datum_type() && cast.inputs.len() == 1);
    outlet = cast.inputs[0];
    /// What each step's constant must be, or which figure it gives.
    enum Want {
        Exactly(f32),
        /// 1.5 * 2^23 + the offset.
        RoundingOffset,
        InvScale,
    }
    let (mut inv_scale, mut offset) = (0.0, 0.0);
    for (name, want) in [
        ("Min", Want::Exactly(127.0)),
        ("Max", Want::Exactly(-127.0)),
        ("Sub", Want::Exactly(ROUND_MAGIC)),
        ("Add", Want::RoundingOffset),
        ("Mul", Want::InvScale),
    ] {
        rule_if!(model.outlet_successors(outlet).len() == 1);
        let n = model.node(outlet.node);
        rule_if_some!(bin = n.op_as::<TypedBinOp>());
        rule_if!(bin.0.name() == name && n.inputs.len() == 2);
        let konst = |slot: usize| {
            model
                .outlet_fact(n.inputs[slot])
                .ok()
                .and_then(|f| f.konst.as_deref())
                .and_then(scalar_f32)
        };
        // The variable on the left (`x - c` for Sub; either side for the others).
        let (var, k) = match (konst(0), konst(1)) {
            (None, Some(k)) => (n.inputs[0], k),
            (Some(k), None) if name != "Sub" => (n.inputs[1], k),
            _ => return Ok(None),
        };
        match want {
            Want::Exactly(v) => rule_if!(k == v),
            Want::RoundingOffset => {
                // Exact: both are whole numbers in [2^23, 2^24).
                offset = k - ROUND_MAGIC;
                rule_if!(offset.fract() == 0.0 && offset.abs() <= 127.0);
            }
            Want::InvScale => inv_scale = k,
        }
        outlet = var;
    }
    Ok(Some(QuantisedInput {
        x: outlet,
        inv_scale,
        offset,
    }))
}

/// True when input `slot` of a quantised einsum is a constant that leaves the integer
/// product alone: a zero bias or zero point, a scale of 1 (the exporter writes none).
fn neutral_q_input(model: &TypedModel, node: &TypedNode, slot: usize) -> TractResult<bool> {
    let Some(k) = model.outlet_fact(node.inputs[slot])?.konst.as_ref() else {
        return Ok(false);
    };
    let v = k.cast_to::<f32>()?;
    let v = v.try_as_plain_ram()?;
    let want = if matches!(slot, 4 | 6 | 8) { 1.0 } else { 0.0 };
    Ok(v.as_slice::<f32>()?.iter().all(|x| *x == want))
}

/// The int8 1x1 convolution the exporter writes (`trainer/src/export/quantize.rs`), after
/// tract's declutter: the quantisation chain ([`quantised_input`]), tract's integer
/// `EinSum` of `ConvInteger` with constant int8 weights `[O, I]` and neutral zero points and
/// scales, `Cast` to f32, then the rescale `Mul`, bias `Add` and ReLU6 — all one
/// [`Pointwise`] op with the int8 kernel.
fn pointwise_i8_rule(
    _ctx: &(),
    model: &TypedModel,
    node: &TypedNode,
    name: &str,
    op: &EinSum,
) -> TractResult<Option<TypedModelPatch>> {
    rule_if!(node.inputs.len() == 9);
    let q_fact = model.outlet_fact(node.inputs[0])?;
    let w_fact = model.outlet_fact(node.inputs[1])?;
    let y_fact = model.outlet_fact(node.id.into())?;
    rule_if!(q_fact.datum_type == i8::datum_type() && y_fact.datum_type == i32::datum_type());
    rule_if_some!(w = w_fact.konst.as_ref());
    rule_if!(w.rank() == 2 && w.datum_type() == i8::datum_type());
    for slot in 2..9 {
        rule_if!(neutral_q_input(model, node, slot)?);
    }
    rule_if_some!(x_shape = q_fact.shape.as_concrete());
    rule_if_some!(y_shape = y_fact.shape.as_concrete());
    rule_if_some!(g = geometry(op, true, x_shape, y_shape, w.shape()));
    rule_if!(g.cin <= pointwise_i8::MAX_CIN);
    rule_if_some!(q = quantised_input(model, node)?);
    let x = q.x;
    let x_fact = model.outlet_fact(x)?;
    rule_if!(x_fact.datum_type == f32::datum_type() && x_fact.shape.as_concrete() == Some(x_shape));
    // The i32 accumulator's cast to f32, then the epilogue.
    rule_if_some!(cast = model.single_succ(node.id)?);
    rule_if!(cast
        .op_as::<Cast>()
        .is_some_and(|c| c.to == f32::datum_type()));
    let (e, last) = absorb_epilogue(model, cast, y_shape, g.co, g.cout, true)?;
    rule_if_some!(scale = e.scale);
    let weights = PackedI8::from_oi(w.try_as_plain_ram()?.as_slice::<i8>()?, g.cout, g.cin);
    let epilogue = QuantEpilogue::new(q.inv_scale, q.offset, &scale, &e.bias, e.lo, e.hi);
    let op = Pointwise {
        kernel: Kernel::I8(Arc::new(weights), Arc::new(epilogue)),
        x_layout: g.x_layout,
        y_layout: g.y_layout,
        positions: g.positions,
        out_shape: y_shape.into(),
    };
    replace(model, name, x, last, op)
}

/// Applies the rules to every matching node of a decluttered model, each only where its
/// kernel is vectorised (f32: AVX-512F; int8: AVX-512 VNNI); does nothing elsewhere.
pub fn rewrite(model: &mut TypedModel) -> TractResult<()> {
    if !pointwise::vectorised() && !pointwise_i8::vectorised() {
        // ARM64 boxes and older x86: tract's plan, untouched.
        return Ok(());
    }
    let mut rules = Rewriter::<()>::default();
    if pointwise::vectorised() {
        rules = rules.with_rule_for("linesight-pointwise", pointwise_rule);
    }
    if pointwise_i8::vectorised() {
        rules = rules.with_rule_for("linesight-pointwise-i8", pointwise_i8_rule);
    }
    rules.rewrite(&(), model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::conv::{Conv, KernelFormat};
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    fn conv(
        model: &mut TypedModel,
        name: &str,
        x: OutletId,
        (cin, cout, group, k, stride): (usize, usize, usize, usize, usize),
    ) -> OutletId {
        let w: Vec<f32> = (0..cout * (cin / group) * k * k)
            .map(|i| ((i as f32 * 0.37 + name.len() as f32).sin()) * 0.2)
            .collect();
        let b: Vec<f32> = (0..cout).map(|i| (i as f32 * 0.07).cos() * 0.1).collect();
        let w = model
            .add_const(
                format!("{name}.w"),
                Tensor::from_shape(&[cout, cin / group, k, k], &w).unwrap(),
            )
            .unwrap();
        let b = model
            .add_const(
                format!("{name}.b"),
                Tensor::from_shape(&[cout], &b).unwrap(),
            )
            .unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(k, k),
            padding: if k == 1 {
                PaddingSpec::Valid
            } else {
                PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1))
            },
            dilations: None,
            strides: Some(tvec!(stride, stride)),
            input_channels: cin,
            output_channels: cout,
        };
        let op = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        model.wire_node(name, op, &[x, w, b]).unwrap()[0]
    }

    fn relu6(model: &mut TypedModel, name: &str, x: OutletId) -> OutletId {
        let zero = model
            .add_const(format!("{name}.lo"), tensor0(0f32))
            .unwrap();
        let six = model
            .add_const(format!("{name}.hi"), tensor0(6f32))
            .unwrap();
        let x = wire_bin(model, &format!("{name}.max"), math::max(), x, zero);
        wire_bin(model, &format!("{name}.min"), math::min(), x, six)
    }

    fn wire_bin(
        model: &mut TypedModel,
        name: &str,
        op: TypedBinOp,
        a: OutletId,
        b: OutletId,
    ) -> OutletId {
        let rank = model.outlet_fact(a).unwrap().rank();
        let b_rank = model.outlet_fact(b).unwrap().rank();
        let mut b = b;
        for i in b_rank..rank {
            b = model
                .wire_node(format!("{name}.b{i}"), AxisOp::Add(0), &[b])
                .unwrap()[0];
        }
        model.wire_node(name, op, &[a, b]).unwrap()[0]
    }

    /// Stem, then two inverted-residual blocks (expansion, depthwise, projection, one with
    /// the residual add): the shapes and layouts of MobileNetV2's body.
    fn mobilenet_like() -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 3, 32, 32])).unwrap();
        let x = conv(&mut m, "stem", x, (3, 32, 1, 3, 2));
        let x = relu6(&mut m, "stem.relu", x);
        let e = conv(&mut m, "b1.expand", x, (32, 96, 1, 1, 1));
        let e = relu6(&mut m, "b1.expand.relu", e);
        let d = conv(&mut m, "b1.dw", e, (96, 96, 96, 3, 1));
        let d = relu6(&mut m, "b1.dw.relu", d);
        let p = conv(&mut m, "b1.project", d, (96, 32, 1, 1, 1));
        let x = m.wire_node("b1.residual", math::add(), &[p, x]).unwrap()[0];
        let e = conv(&mut m, "b2.expand", x, (32, 144, 1, 1, 1));
        let e = relu6(&mut m, "b2.expand.relu", e);
        let d = conv(&mut m, "b2.dw", e, (144, 144, 144, 3, 2));
        let d = relu6(&mut m, "b2.dw.relu", d);
        let p = conv(&mut m, "b2.project", d, (144, 24, 1, 1, 1));
        m.select_output_outlets(&[p]).unwrap();
        m
    }

    fn run(model: TypedModel, input: &Tensor) -> Vec<f32> {
        let plan = model.into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn pointwise_ops_replace_the_1x1_convolutions_and_compute_the_same() {
        let input: Vec<f32> = (0..3 * 32 * 32).map(|i| (i as f32 * 0.011).sin()).collect();
        let input = Tensor::from_shape(&[1, 3, 32, 32], &input).unwrap();
        let want = run(mobilenet_like().into_optimized().unwrap(), &input);

        let mut model = mobilenet_like().into_decluttered().unwrap();
        rewrite(&mut model).unwrap();
        let model = model.into_optimized().unwrap();
        let ours = model
            .nodes()
            .iter()
            .filter(|n| n.op_is::<Pointwise>())
            .count();
        if pointwise::vectorised() {
            // Every 1x1 convolution, whichever side of the depthwise flip it sits on.
            assert_eq!(ours, 4, "{ours} pointwise ops in\n{model}");
        } else {
            assert_eq!(
                ours, 0,
                "no vector kernel here: tract's plan must stay as it is"
            );
        }
        let got = run(model, &input);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "worst relative difference {worst}");
    }
}
