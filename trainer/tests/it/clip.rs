//! CLIP towers on the tiny random configuration: shapes, gradients reaching every variable,
//! checkpoint round trip and refusal, and the differentiable LayerNorm against a naive
//! reference.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use linesight_trainer::backbone::clip::{
    load_vars, preprocess_spec, ClipConfig, ClipModel, ClipVisionTower, LayerNorm,
};

const EOS: u32 = 99;

/// A tiny random model and the map of its variables.
fn tiny_model() -> (ClipModel, VarMap, ClipConfig) {
    let cfg = ClipConfig::tiny();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ClipModel::new(vb, &cfg).expect("tiny CLIP builds");
    (model, varmap, cfg)
}

/// `n` deterministic, varied images for `cfg`.
fn pixels(cfg: &ClipConfig, n: usize) -> Tensor {
    let s = cfg.vision.image_size;
    let len = n * 3 * s * s;
    let data: Vec<f32> = (0..len)
        .map(|i| ((i as f32) * 0.37).sin() + 0.1 * ((i / 7) as f32 * 0.11).cos())
        .collect();
    Tensor::from_vec(data, (n, 3, s, s), &Device::Cpu).expect("pixels")
}

/// Two rows of token ids, full length: end-of-text (the largest id) at 5 and at the end.
fn ids(cfg: &ClipConfig) -> Tensor {
    let l = cfg.text.max_position_embeddings;
    let mut rows = vec![0u32; 2 * l];
    for j in 0..l {
        rows[j] = if j < 5 {
            10 + 7 * j as u32
        } else if j == 5 {
            EOS
        } else {
            0
        };
        rows[l + j] = if j + 1 == l { EOS } else { 3 + 5 * j as u32 };
    }
    Tensor::from_vec(rows, (2, l), &Device::Cpu).expect("ids")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.flatten_all())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .expect("difference")
}

fn var_names(varmap: &VarMap) -> BTreeSet<String> {
    varmap
        .data()
        .lock()
        .expect("varmap lock")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn tower_output_shapes() {
    let (model, _, cfg) = tiny_model();
    let image = model.vision().forward(&pixels(&cfg, 3)).unwrap();
    assert_eq!(image.dims(), &[3, cfg.projection_dim]);
    let pooled = model.vision().forward_pooled(&pixels(&cfg, 3)).unwrap();
    assert_eq!(pooled.dims(), &[3, cfg.vision.hidden_size]);
    let text = model.text().forward(&ids(&cfg)).unwrap();
    assert_eq!(text.dims(), &[2, cfg.projection_dim]);
    // Shorter sequences use the first rows of the position table.
    let short = ids(&cfg).narrow(1, 0, 6).unwrap();
    assert_eq!(
        model.text().forward(&short).unwrap().dims(),
        &[2, cfg.projection_dim]
    );
    let logits = model.logits(&image, &text).unwrap();
    assert_eq!(logits.dims(), &[3, 2]);
}

#[test]
fn published_configs_have_published_sizes() {
    // (config, tokens per image, vision width, text width, projection)
    let cases = [
        (ClipConfig::vit_b16(), 197, 768, 512, 512),
        (ClipConfig::vit_b32(), 50, 768, 512, 512),
        (ClipConfig::vit_l14(), 257, 1024, 768, 768),
    ];
    for (cfg, tokens, vision, text, proj) in cases {
        assert_eq!(cfg.vision.num_positions(), tokens);
        assert_eq!(cfg.vision.hidden_size, vision);
        assert_eq!(cfg.text.hidden_size, text);
        assert_eq!(cfg.projection_dim, proj);
        assert_eq!(cfg.text.vocab_size, 49408);
        assert_eq!(cfg.text.max_position_embeddings, 77);
        assert_eq!(preprocess_spec(&cfg).crop, 224);
    }
}

#[test]
fn every_variable_gets_a_nonzero_gradient() {
    let (model, varmap, cfg) = tiny_model();
    let image = model.encode_image(&pixels(&cfg, 2)).unwrap();
    let text = model.encode_text(&ids(&cfg)).unwrap();
    // CLIP's symmetric contrastive loss over the 2 x 2 logits.
    let logits = model.logits(&image, &text).unwrap();
    let targets = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let loss = (candle_nn::loss::cross_entropy(&logits, &targets).unwrap()
        + candle_nn::loss::cross_entropy(&logits.t().unwrap(), &targets).unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();

    let vars = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut failed = Vec::new();
    for name in &names {
        let var = &vars[*name];
        match grads.get(var.as_tensor()) {
            None => failed.push(format!("{name}: no gradient")),
            Some(g) => {
                let norm = g.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
                let norm = norm.to_scalar::<f32>().unwrap();
                if !(norm.is_finite() && norm > 0.0) {
                    failed.push(format!("{name}: gradient norm {norm}"));
                }
            }
        }
    }
    // 2 towers x 2 layers x 16 tensors, 3 + 2 embedding tables, 3 outer LayerNorms x 2,
    // 2 projections, logit_scale.
    let per_layer = 16;
    let expected = 2 * 2 * per_layer + 3 + 2 + 3 * 2 + 2 + 1;
    assert_eq!(names.len(), expected, "variables: {names:?}");
    assert!(
        failed.is_empty(),
        "variables without a gradient:\n{}",
        failed.join("\n")
    );
}

#[test]
fn named_tensors_are_the_varmap() {
    let (model, varmap, _) = tiny_model();
    let named: BTreeSet<String> = model.named_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(named, var_names(&varmap));
    for name in [
        "vision_model.embeddings.class_embedding",
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.pre_layrnorm.weight",
        "vision_model.encoder.layers.1.self_attn.out_proj.bias",
        "vision_model.encoder.layers.0.mlp.fc1.weight",
        "vision_model.post_layernorm.bias",
        "visual_projection.weight",
        "text_model.embeddings.token_embedding.weight",
        "text_model.encoder.layers.1.layer_norm2.weight",
        "text_model.final_layer_norm.weight",
        "text_projection.weight",
        "logit_scale",
    ] {
        assert!(named.contains(name), "{name} is not a variable");
    }
    assert!(!named.contains("visual_projection.bias"));
    assert!(!named.contains("vision_model.embeddings.patch_embedding.bias"));
}

#[test]
fn checkpoint_round_trip_gives_equal_outputs() {
    let (model, varmap, cfg) = tiny_model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    varmap.save(&path).unwrap();

    let (loaded, loaded_map) = ClipModel::load(&path, &cfg, &Device::Cpu).unwrap();
    assert_eq!(var_names(&loaded_map), var_names(&varmap));
    let (px, tok) = (pixels(&cfg, 2), ids(&cfg));
    let diff = max_abs_diff(
        &model.encode_image(&px).unwrap(),
        &loaded.encode_image(&px).unwrap(),
    );
    assert_eq!(diff, 0.0, "image embeddings differ by {diff}");
    let diff = max_abs_diff(
        &model.encode_text(&tok).unwrap(),
        &loaded.encode_text(&tok).unwrap(),
    );
    assert_eq!(diff, 0.0, "text embeddings differ by {diff}");

    // The image tower alone takes only its own tensors.
    let (tower, tower_map) = ClipVisionTower::load(&path, &cfg, &Device::Cpu).unwrap();
    let names = var_names(&tower_map);
    assert!(names
        .iter()
        .all(|n| n.starts_with("vision_model.") || n == "visual_projection.weight"));
    assert_eq!(tower.embed_dim(), cfg.projection_dim);
    let diff = max_abs_diff(
        &model.encode_image(&px).unwrap(),
        &tower.forward(&px).unwrap(),
    );
    assert_eq!(diff, 0.0);

    // load_vars overwrites an existing map in place.
    let (fresh, fresh_map, _) = tiny_model();
    load_vars(&fresh_map, &path).unwrap();
    let diff = max_abs_diff(
        &model.encode_text(&tok).unwrap(),
        &fresh.encode_text(&tok).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

/// Saves the tiny model's tensors with `edit` applied; returns the file's path.
fn save_edited(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> std::path::PathBuf {
    let (_, varmap, _) = tiny_model();
    let mut tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    edit(&mut tensors);
    let path = dir.join("edited.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

#[test]
fn checkpoint_problems_name_the_tensor_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClipConfig::tiny();
    // (tensor, edit, expected words)
    let cases: [(&str, bool, &str); 4] = [
        (
            "vision_model.encoder.layers.1.mlp.fc2.bias",
            false,
            "is missing from",
        ),
        (
            "vision_model.embeddings.class_embedding",
            false,
            "is missing from",
        ),
        ("text_projection.weight", false, "is missing from"),
        ("text_model.final_layer_norm.weight", true, "has shape [7]"),
    ];
    for (name, reshape, words) in cases {
        let path = save_edited(dir.path(), |t| {
            if reshape {
                t.insert(
                    name.to_string(),
                    Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
                );
            } else {
                t.remove(name);
            }
        });
        let err = match ClipModel::load(&path, &cfg, &Device::Cpu) {
            Ok(_) => panic!("loading without a good `{name}` succeeded"),
            Err(err) => format!("{err:#}"),
        };
        let file = path.display().to_string();
        assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
        assert!(err.contains(&file), "{name}: {err}");
        assert!(err.contains(words), "{name}: {err}");

        let (_, varmap, _) = tiny_model();
        let err = format!("{:#}", load_vars(&varmap, &path).unwrap_err());
        assert!(
            err.contains(&format!("`{name}`")) && err.contains(&file),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.safetensors");
    let err = ClipModel::load(&path, &ClipConfig::tiny(), &Device::Cpu)
        .err()
        .expect("loading a missing file succeeded");
    let err = format!("{err:#}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn text_pools_at_the_largest_id_and_ignores_later_tokens() {
    let (model, _, cfg) = tiny_model();
    let base = ids(&cfg);
    let l = cfg.text.max_position_embeddings;
    // Row 0 ends at position 5; changing the tokens after it must not change its output.
    let mut rows = base.to_vec2::<u32>().unwrap();
    for t in rows[0].iter_mut().skip(6) {
        *t = 42;
    }
    let flat: Vec<u32> = rows.into_iter().flatten().collect();
    let edited = Tensor::from_vec(flat, (2, l), &Device::Cpu).unwrap();
    let a = model.encode_text(&base).unwrap();
    let b = model.encode_text(&edited).unwrap();
    assert_eq!(max_abs_diff(&a.get(0).unwrap(), &b.get(0).unwrap()), 0.0);
    // A token before the end does change it.
    let mut rows = base.to_vec2::<u32>().unwrap();
    rows[0][2] = 1;
    let flat: Vec<u32> = rows.into_iter().flatten().collect();
    let edited = Tensor::from_vec(flat, (2, l), &Device::Cpu).unwrap();
    let c = model.encode_text(&edited).unwrap();
    assert!(max_abs_diff(&a.get(0).unwrap(), &c.get(0).unwrap()) > 0.0);
    // i64 ids, as tokenizers hand them out, give the same result.
    let as_i64 = base.to_dtype(DType::I64).unwrap();
    assert_eq!(max_abs_diff(&a, &model.encode_text(&as_i64).unwrap()), 0.0);
}

#[test]
fn bad_inputs_are_refused_with_the_expected_shape() {
    let (model, _, cfg) = tiny_model();
    let big = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let err = model.encode_image(&big).unwrap_err().to_string();
    assert!(err.contains("[N, 3, 32, 32]"), "{err}");
    let long = Tensor::zeros(
        (1, cfg.text.max_position_embeddings + 1),
        DType::U32,
        &Device::Cpu,
    )
    .unwrap();
    let err = model.encode_text(&long).unwrap_err().to_string();
    assert!(err.contains("1 to 16 tokens"), "{err}");
    let oov = Tensor::new(&[[1u32, 100]], &Device::Cpu).unwrap();
    let err = model.encode_text(&oov).unwrap_err().to_string();
    assert!(err.contains("token id 100"), "{err}");
}

/// Plain-Rust LayerNorm over the last axis of a row-major `[rows, dim]` buffer, in f64.
fn naive_layer_norm(x: &[f32], dim: usize, w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    x.chunks(dim)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            let inv = 1.0 / (var + eps).sqrt();
            row.iter()
                .zip(w.iter().zip(b))
                .map(move |(&v, (&w, &b))| ((v as f64 - mean) * inv * w as f64 + b as f64) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_matches_a_naive_reference() {
    let (rows, dim) = (3 * 5, 7);
    // Rows with offsets and spreads far from 0 / 1, and one constant row.
    let x: Vec<f32> = (0..rows * dim)
        .map(|i| {
            let r = i / dim;
            if r == 4 {
                3.25
            } else {
                (r as f32 - 6.0) * 2.5 + (i as f32 * 1.3).sin() * (1.0 + r as f32)
            }
        })
        .collect();
    let w: Vec<f32> = (0..dim).map(|i| 0.5 + 0.1 * i as f32).collect();
    let b: Vec<f32> = (0..dim).map(|i| -0.3 + 0.05 * i as f32).collect();
    let dev = Device::Cpu;
    let ln = LayerNorm::new(
        Tensor::new(w.as_slice(), &dev).unwrap(),
        Tensor::new(b.as_slice(), &dev).unwrap(),
        1e-5,
    );
    let xs = Tensor::from_vec(x.clone(), (3, 5, dim), &dev).unwrap();
    let got = ln
        .forward(&xs)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = naive_layer_norm(&x, dim, &w, &b, 1e-5);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5, "element {i}: candle {g}, naive {w}");
    }
}

#[test]
fn layer_norm_gradient_matches_finite_differences() {
    // f64 throughout, so central differences are accurate to ~1e-8.
    let dev = Device::Cpu;
    let dim = 5;
    let x: Vec<f64> = (0..2 * dim)
        .map(|i| (i as f64 * 0.7).sin() * 3.0 + 1.0)
        .collect();
    let w = candle_core::Var::from_vec(vec![0.9f64, 1.1, -0.7, 0.4, 1.3], dim, &dev).unwrap();
    let b = candle_core::Var::from_vec(vec![0.1f64, -0.2, 0.3, 0.0, 0.5], dim, &dev).unwrap();
    let xv = candle_core::Var::from_vec(x.clone(), (2, dim), &dev).unwrap();
    // Loss: sum(LN(x) * c) with fixed, varied c (a plain sum would give a zero gradient
    // with respect to x, since LN's output rows have a fixed sum when w is constant).
    let c = Tensor::new(
        &[[0.3f64, -1.2, 0.8, 2.0, -0.5], [1.0, 0.2, -0.4, 0.6, -1.5]],
        &dev,
    )
    .unwrap();
    let loss = |x: &Tensor| -> Tensor {
        let ln = LayerNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), 1e-5);
        (ln.forward(x).unwrap() * &c).unwrap().sum_all().unwrap()
    };
    let grads = loss(xv.as_tensor()).backward().unwrap();
    let analytic = grads
        .get(xv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let h = 1e-6;
    for i in 0..x.len() {
        let at = |delta: f64| {
            let mut xs = x.clone();
            xs[i] += delta;
            let t = Tensor::from_vec(xs, (2, dim), &dev).unwrap();
            loss(&t).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6,
            "d loss / d x[{i}]: autograd {}, finite differences {numeric}",
            analytic[i]
        );
    }
    // d loss / d bias = column sums of c; d loss / d weight = column sums of c * x_hat.
    let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    let want_gb = [1.3, -1.0, 0.4, 2.6, -2.0];
    for (g, w) in gb.iter().zip(want_gb) {
        assert!((g - w).abs() < 1e-12, "bias gradient {g}, expected {w}");
    }
    assert!(grads.get(w.as_tensor()).is_some());
}

/// Weights by checkpoint name, as f64 buffers.
struct NaiveWeights(HashMap<String, Vec<f64>>);

impl NaiveWeights {
    fn of(named: Vec<(String, Tensor)>) -> Self {
        let map = named
            .into_iter()
            .map(|(name, t)| {
                let v = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                (name, v.to_vec1::<f64>().unwrap())
            })
            .collect();
        Self(map)
    }

    fn get(&self, name: &str) -> &[f64] {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no weight `{name}`"))
    }

    /// `y = x W^T (+ b)` for each row of `x`; `W` is `[out, in]`.
    fn linear(&self, prefix: &str, x: &[Vec<f64>], bias: bool) -> Vec<Vec<f64>> {
        let w = self.get(&format!("{prefix}.weight"));
        let inp = x[0].len();
        let out = w.len() / inp;
        let b = bias.then(|| self.get(&format!("{prefix}.bias")));
        x.iter()
            .map(|row| {
                (0..out)
                    .map(|o| {
                        let dot: f64 = (0..inp).map(|i| w[o * inp + i] * row[i]).sum();
                        dot + b.map_or(0.0, |b| b[o])
                    })
                    .collect()
            })
            .collect()
    }

    fn layer_norm(&self, prefix: &str, x: &[Vec<f64>], eps: f64) -> Vec<Vec<f64>> {
        let (w, b) = (
            self.get(&format!("{prefix}.weight")),
            self.get(&format!("{prefix}.bias")),
        );
        x.iter()
            .map(|row| {
                let n = row.len() as f64;
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let inv = 1.0 / (var + eps).sqrt();
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (v - mean) * inv * w[i] + b[i])
                    .collect()
            })
            .collect()
    }
}

/// The vision tower for one image `[3, S, S]`, written out loop by loop from the op sequence
/// in `backbone::clip::vision`'s module doc.
fn naive_vision(w: &NaiveWeights, cfg: &ClipConfig, image: &[f64]) -> Vec<f64> {
    let v = &cfg.vision;
    let (s, p, g, d, c) = (
        v.image_size,
        v.patch_size,
        v.grid(),
        v.hidden_size,
        v.num_channels,
    );
    let eps = v.layer_norm_eps;
    // 1-4: patchify, class token, positions.
    let kernel = w.get("vision_model.embeddings.patch_embedding.weight");
    let mut x = vec![w.get("vision_model.embeddings.class_embedding").to_vec()];
    for gy in 0..g {
        for gx in 0..g {
            let token = (0..d)
                .map(|o| {
                    let mut acc = 0.0;
                    for ch in 0..c {
                        for ky in 0..p {
                            for kx in 0..p {
                                let wi = ((o * c + ch) * p + ky) * p + kx;
                                let xi = (ch * s + gy * p + ky) * s + gx * p + kx;
                                acc += kernel[wi] * image[xi];
                            }
                        }
                    }
                    acc
                })
                .collect();
            x.push(token);
        }
    }
    let pos = w.get("vision_model.embeddings.position_embedding.weight");
    for (t, row) in x.iter_mut().enumerate() {
        for (i, val) in row.iter_mut().enumerate() {
            *val += pos[t * d + i];
        }
    }
    // 5.
    let mut x = w.layer_norm("vision_model.pre_layrnorm", &x, eps);
    // 6.
    let (heads, dh) = (v.num_attention_heads, d / v.num_attention_heads);
    let scale = (dh as f64).powf(-0.5);
    for layer in 0..v.num_hidden_layers {
        let pre = format!("vision_model.encoder.layers.{layer}");
        let h = w.layer_norm(&format!("{pre}.layer_norm1"), &x, eps);
        let q = w.linear(&format!("{pre}.self_attn.q_proj"), &h, true);
        let k = w.linear(&format!("{pre}.self_attn.k_proj"), &h, true);
        let vv = w.linear(&format!("{pre}.self_attn.v_proj"), &h, true);
        let t = x.len();
        let mut o = vec![vec![0.0; d]; t];
        for hd in 0..heads {
            let r = hd * dh..(hd + 1) * dh;
            for i in 0..t {
                let scores: Vec<f64> = (0..t)
                    .map(|j| r.clone().map(|e| q[i][e] * k[j][e]).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                for e in r.clone() {
                    o[i][e] = (0..t).map(|j| exp[j] / sum * vv[j][e]).sum();
                }
            }
        }
        let attn = w.linear(&format!("{pre}.self_attn.out_proj"), &o, true);
        for (xr, ar) in x.iter_mut().zip(&attn) {
            xr.iter_mut().zip(ar).for_each(|(a, b)| *a += b);
        }
        let h = w.layer_norm(&format!("{pre}.layer_norm2"), &x, eps);
        let mut h = w.linear(&format!("{pre}.mlp.fc1"), &h, true);
        for val in h.iter_mut().flatten() {
            *val *= 1.0 / (1.0 + (-1.702 * *val).exp());
        }
        let h = w.linear(&format!("{pre}.mlp.fc2"), &h, true);
        for (xr, hr) in x.iter_mut().zip(&h) {
            xr.iter_mut().zip(hr).for_each(|(a, b)| *a += b);
        }
    }
    // 7-9.
    let cls = w.layer_norm("vision_model.post_layernorm", &x[..1], eps);
    w.linear("visual_projection", &cls, false).remove(0)
}

#[test]
fn vision_tower_matches_a_naive_reference() {
    let (model, _, cfg) = tiny_model();
    let px = pixels(&cfg, 2);
    let got = model
        .vision()
        .forward(&px)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let weights = NaiveWeights::of(model.vision().named_tensors());
    for (n, got) in got.iter().enumerate() {
        let image = px
            .get(n)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let want = naive_vision(&weights, &cfg, &image.to_vec1::<f64>().unwrap());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "image {n}, [{i}]: candle {g}, naive {w}"
            );
        }
    }
}
