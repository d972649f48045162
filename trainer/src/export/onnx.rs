//! A small ONNX graph writer over `tract_onnx::pb` (prost types): no candle exporter exists,
//! so each backbone describes its own forward pass here, node by node.
//!
//! Opset 13, IR version 8. Values are named `{prefix}{counter}` unless given a name;
//! initializers keep the checkpoint's tensor names so a graph dump reads like the model.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;

/// Builds one ONNX graph. Nodes must be added in topological order.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

/// An ONNX node attribute.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a graph input of type f32 with fixed dims.
    pub fn input(&mut self, name: &str, dims: &[i64]) -> String {
        self.inputs.push(value_info(name, dims));
        name.to_string()
    }

    /// Declares a graph output of type f32 with fixed dims.
    pub fn output(&mut self, name: &str, dims: &[i64]) {
        self.outputs.push(value_info(name, dims));
    }

    /// Adds an f32 initializer from raw values.
    pub fn init_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an i64 initializer (shapes, axes).
    pub fn init_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an initializer from a candle tensor (converted to f32 on the CPU).
    pub fn init_tensor(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let t = t
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?;
        let dims = t.dims().to_vec();
        let data = t
            .flatten_all()?
            .to_vec1::<f32>()
            .with_context(|| format!("initializer `{name}`"))?;
        Ok(self.init_f32(name, &dims, &data))
    }

    /// A fresh value name with a readable prefix.
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    /// Appends a node with one output; returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out);
        out
    }

    /// Appends a node whose single output gets the given name.
    pub fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        output: &str,
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = AttributeType::Int as i32;
                        p.i = i;
                    }
                    Attr::Ints(v) => {
                        p.r#type = AttributeType::Ints as i32;
                        p.ints = v;
                    }
                    Attr::Float(f) => {
                        p.r#type = AttributeType::Float as i32;
                        p.f = f;
                    }
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute,
            ..Default::default()
        });
    }

    /// Finishes the model and encodes it as ONNX protobuf bytes.
    pub fn finish(self, doc: &str) -> Result<Vec<u8>> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            bail!("onnx graph needs at least one input and one output");
        }
        let model = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "linesight-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                name: "linesight".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }

    /// Number of nodes so far (for tests and logs).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
