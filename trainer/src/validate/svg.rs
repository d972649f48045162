//! The report's plots, as inline SVG written by hand: a page that must open with no
//! network cannot load a charting library, and these five plots are rectangles, lines and
//! text.
//!
//! Each plot has a signature colour (the constants below) that the end-to-end test looks
//! for in a screenshot, to see that the browser drew it.

use super::calibration::{Bin, CoveragePoint};
use super::classes::Confusion;
use super::compare::ClassDelta;
use super::html::escape;
use std::fmt::Write as _;

/// Heatmap: the diagonal (right) in blue, confusions in red.
pub const BLUE: (u8, u8, u8) = (33, 102, 172);
pub const RED: (u8, u8, u8) = (203, 24, 29);
/// Reliability bars.
pub const ORANGE: (u8, u8, u8) = (242, 142, 43);
/// Accuracy-vs-coverage curve.
pub const PURPLE: (u8, u8, u8) = (118, 42, 131);
/// Drift histogram: the line's frames (the reference is grey).
pub const GREEN: (u8, u8, u8) = (27, 120, 55);
const GREY: &str = "#9e9e9e";
const INK: &str = "#222";

fn rgb(c: (u8, u8, u8)) -> String {
    format!("rgb({},{},{})", c.0, c.1, c.2)
}

/// `c` blended with white: `t` = 0 white, 1 the full colour.
fn tint(c: (u8, u8, u8), t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let mix = |v: u8| (255.0 - (255.0 - v as f64) * t).round() as u8;
    rgb((mix(c.0), mix(c.1), mix(c.2)))
}

/// Rounds for SVG coordinates (one decimal is plenty on screen).
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// An x/y plot area: `x` and `y` map data in [x0, x1] / [y0, y1] to pixels.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// A plot area at (`left`, `top`) of `width` x `height` pixels showing `x` and `y`.
    fn new(left: f64, top: f64, width: f64, height: f64, x: (f64, f64), y: (f64, f64)) -> Self {
        Frame {
            left,
            top,
            width,
            height,
            x,
            y,
        }
    }

    fn px(&self, x: f64) -> f64 {
        r1(self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.width)
    }
    fn py(&self, y: f64) -> f64 {
        r1(self.top + self.height - (y - self.y.0) / (self.y.1 - self.y.0) * self.height)
    }

    /// Axes with ticks at `xs` / `ys` and axis titles.
    fn axes(&self, out: &mut String, xs: &[f64], ys: &[f64], xl: &str, yl: &str, pct: bool) {
        let fmt = |v: f64| {
            if pct {
                format!("{:.0}%", v * 100.0)
            } else {
                format!("{v}")
            }
        };
        let (l, t, w, h) = (self.left, self.top, self.width, self.height);
        let _ = write!(
            out,
            r#"<rect x="{l}" y="{t}" width="{w}" height="{h}" fill="none" stroke="{INK}" stroke-width="1"/>"#
        );
        for &x in xs {
            let px = self.px(x);
            let _ = write!(
                out,
                r##"<line x1="{px}" y1="{t}" x2="{px}" y2="{}" stroke="#e0e0e0"/><text x="{px}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
                t + h,
                t + h + 14.0,
                fmt(x)
            );
        }
        for &y in ys {
            let py = self.py(y);
            let _ = write!(
                out,
                r##"<line x1="{l}" y1="{py}" x2="{}" y2="{py}" stroke="#e0e0e0"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
                l + w,
                l - 4.0,
                py + 4.0,
                fmt(y)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
            l + w / 2.0,
            t + h + 32.0,
            escape(xl),
            l - 38.0,
            t + h / 2.0,
            l - 38.0,
            t + h / 2.0,
            escape(yl)
        );
    }
}

fn open(out: &mut String, id: &str, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg id="{id}" class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{}" font-family="sans-serif" fill="{INK}">"#,
        escape(title)
    );
}

/// The confusion matrix as a heatmap: rows are true classes, columns predicted names;
/// each cell's colour is its share of the row (blue on the diagonal, red off it), its
/// count in the cell and its tooltip.
pub fn heatmap(c: &Confusion) -> String {
    let cell = 18.0;
    let label_w = c
        .rows
        .iter()
        .chain(&c.columns)
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(4) as f64
        * 6.2
        + 10.0;
    let (left, top) = (label_w, label_w);
    // the column names are turned 60 degrees: they reach half their length to the right
    let width = left + cell * c.columns.len() as f64 + label_w * 0.5;
    let height = top + cell * c.rows.len() as f64 + 10.0;
    let mut out = String::new();
    open(
        &mut out,
        "plot-confusion",
        width,
        height,
        "confusion matrix",
    );
    for (i, name) in c.rows.iter().enumerate() {
        let y = top + cell * i as f64 + cell * 0.7;
        let _ = write!(
            out,
            r#"<text x="{}" y="{y}" font-size="11" text-anchor="end">{}</text>"#,
            left - 4.0,
            escape(name)
        );
    }
    for (j, name) in c.columns.iter().enumerate() {
        let x = left + cell * j as f64 + cell * 0.7;
        let _ = write!(
            out,
            r#"<text x="{x}" y="{}" font-size="11" transform="rotate(-60 {x} {})">{}</text>"#,
            top - 4.0,
            top - 4.0,
            escape(name)
        );
    }
    for (i, row) in c.counts.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (j, &n) in row.iter().enumerate() {
            let share = n as f64 / total.max(1) as f64;
            let colour = if i == j { BLUE } else { RED };
            let (x, y) = (left + cell * j as f64, top + cell * i as f64);
            let fill = if n == 0 {
                "#fafafa".to_string()
            } else {
                tint(colour, 0.15 + 0.85 * share)
            };
            let _ = write!(
                out,
                r##"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#fff"><title>{} → {}: {n} of {total}</title></rect>"##,
                escape(&c.rows[i]),
                escape(&c.columns[j])
            );
            if n > 0 {
                let ink = if share > 0.5 { "#fff" } else { INK };
                let _ = write!(
                    out,
                    r#"<text x="{}" y="{}" font-size="9" text-anchor="middle" fill="{ink}">{n}</text>"#,
                    x + cell / 2.0,
                    y + cell * 0.68
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The reliability diagram: per score bin, the share right (bars) against the mean score
/// (the diagonal a calibrated model follows); counts under the bars.
pub fn reliability(bins: &[Bin], ece: f64) -> String {
    let f = Frame::new(56.0, 28.0, 320.0, 240.0, (0.0, 1.0), (0.0, 1.0));
    let mut out = String::new();
    open(
        &mut out,
        "plot-reliability",
        400.0,
        320.0,
        "reliability diagram",
    );
    let ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
    f.axes(
        &mut out,
        &ticks,
        &ticks,
        "score (top-1 softmax)",
        "share right",
        true,
    );
    for b in bins.iter().filter(|b| b.count > 0) {
        let (x0, x1) = (f.px(b.low) + 1.0, f.px(b.high) - 1.0);
        let y = f.py(b.accuracy);
        let _ = write!(
            out,
            r#"<rect x="{x0}" y="{y}" width="{}" height="{}" fill="{}"><title>scores {:.1}-{:.1}: {} images, mean score {:.3}, {:.1} % right</title></rect><text x="{}" y="{}" font-size="9" text-anchor="middle">{}</text>"#,
            r1(x1 - x0),
            r1(f.py(0.0) - y),
            rgb(ORANGE),
            b.low,
            b.high,
            b.count,
            b.confidence,
            b.accuracy * 100.0,
            r1((x0 + x1) / 2.0),
            f.py(0.0) - 3.0,
            b.count
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GREY}" stroke-dasharray="4 3"/><text x="{}" y="18" font-size="12">ECE {:.3}</text></svg>"#,
        f.px(0.0),
        f.py(0.0),
        f.px(1.0),
        f.py(1.0),
        f.left,
        ece
    );
    out
}

/// Accuracy of the accepted images against the share accepted, as the reject threshold
/// rises from 0 (everything accepted, right end) to the highest score (left end); the
/// target precision dashed, the recommended global threshold as a dot.
pub fn coverage(curve: &[CoveragePoint], target: f64, chosen: Option<(f64, f64, f32)>) -> String {
    let min_acc = curve
        .iter()
        .map(|p| p.accuracy)
        .fold(1.0f64, f64::min)
        .min(target);
    let y0 = ((min_acc - 0.05) * 10.0).floor().max(0.0) / 10.0;
    let f = Frame::new(56.0, 28.0, 320.0, 240.0, (0.0, 1.0), (y0, 1.0));
    let mut out = String::new();
    open(
        &mut out,
        "plot-coverage",
        400.0,
        320.0,
        "accuracy against coverage",
    );
    let yt: Vec<f64> = (0..=10)
        .map(|i| y0 + (1.0 - y0) * i as f64 / 10.0)
        .filter(|v| ((v * 100.0).round() as i64) % 10 == 0)
        .collect();
    f.axes(
        &mut out,
        &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        &yt,
        "coverage (share accepted)",
        "accuracy of the accepted",
        true,
    );
    let _ = write!(
        out,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{GREY}" stroke-dasharray="5 3"/><text x="{}" y="{}" font-size="11" text-anchor="end">target {:.0}%</text>"#,
        f.px(0.0),
        f.py(target),
        f.px(1.0),
        f.py(target),
        f.px(1.0) - 2.0,
        f.py(target) - 3.0,
        target * 100.0
    );
    let pts: Vec<String> = curve
        .iter()
        .map(|p| format!("{},{}", f.px(p.coverage), f.py(p.accuracy)))
        .collect();
    let _ = write!(
        out,
        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
        pts.join(" "),
        rgb(PURPLE)
    );
    if let Some((cov, acc, t)) = chosen {
        let _ = write!(
            out,
            r#"<circle cx="{}" cy="{}" r="5" fill="{INK}"><title>global threshold {t}: coverage {:.1} %, accuracy {:.1} %</title></circle><text x="{}" y="{}" font-size="11">threshold {:.3}</text>"#,
            f.px(cov),
            f.py(acc),
            cov * 100.0,
            acc * 100.0,
            f.px(cov) + 7.0,
            f.py(acc) + 14.0,
            t
        );
    }
    out.push_str("</svg>");
    out
}

/// Per-class recall deltas against the deployed model with their intervals (a forest
/// plot): left of 0 is a regression.
pub fn deltas(rows: &[ClassDelta]) -> String {
    let row_h = 16.0;
    let label_w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4) as f64
        * 6.2
        + 12.0;
    let n = rows.len().max(1) as f64;
    let f = Frame::new(label_w, 10.0, 360.0, row_h * n, (-1.0, 1.0), (0.0, n));
    let mut out = String::new();
    open(
        &mut out,
        "plot-deltas",
        label_w + 380.0,
        f.height + 50.0,
        "per-class recall deltas",
    );
    f.axes(
        &mut out,
        &[-1.0, -0.5, 0.0, 0.5, 1.0],
        &[],
        "new recall - deployed recall",
        "",
        true,
    );
    for (i, r) in rows.iter().enumerate() {
        let y = f.top + row_h * i as f64 + row_h / 2.0;
        let colour = if r.delta.value < 0.0 { RED } else { BLUE };
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"/><circle cx="{}" cy="{y}" r="4" fill="{}"><title>{}: {:+.1} points ({:+.1} to {:+.1})</title></circle>"#,
            f.left - 4.0,
            y + 4.0,
            escape(&r.name),
            f.px(r.delta.low),
            f.px(r.delta.high),
            tint(colour, 0.5),
            f.px(r.delta.value),
            rgb(colour),
            escape(&r.name),
            r.delta.value * 100.0,
            r.delta.low * 100.0,
            r.delta.high * 100.0
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{INK}"/></svg>"#,
        f.px(0.0),
        f.top,
        f.px(0.0),
        f.top + f.height
    );
    out
}

/// Two histograms of cosine distances to the nearest training image: the scored images
/// (grey, the reference) and the line's frames (green), each as a share of its set.
pub fn drift(reference: &[f32], frames: &[f32], cut: f32) -> String {
    let max = reference
        .iter()
        .chain(frames)
        .copied()
        .fold(0.0f32, f32::max)
        .max(cut) as f64;
    let x1 = ((max * 10.0).ceil() / 10.0).max(0.1);
    let bins = 20;
    let hist = |v: &[f32]| {
        let mut h = vec![0f64; bins];
        for &d in v {
            let b = ((d as f64 / x1 * bins as f64) as usize).min(bins - 1);
            h[b] += 1.0 / v.len().max(1) as f64;
        }
        h
    };
    let (hr, hf) = (hist(reference), hist(frames));
    let top = hr.iter().chain(&hf).copied().fold(0.0, f64::max).max(0.01);
    let f = Frame::new(56.0, 28.0, 360.0, 220.0, (0.0, x1), (0.0, top));
    let mut out = String::new();
    open(
        &mut out,
        "plot-drift",
        440.0,
        300.0,
        "distance to the training set",
    );
    let xt: Vec<f64> = (0..=4)
        .map(|i| r1(x1 * i as f64 / 4.0 * 100.0) / 100.0)
        .collect();
    let yt: Vec<f64> = (0..=4).map(|i| top * i as f64 / 4.0).collect();
    f.axes(
        &mut out,
        &xt,
        &yt,
        "cosine distance to the nearest training image",
        "share of the set",
        true,
    );
    let w = x1 / bins as f64;
    for (h, colour, dx) in [(&hr, GREY.to_string(), 0.0), (&hf, rgb(GREEN), 0.5)] {
        for (b, &v) in h.iter().enumerate().filter(|(_, v)| **v > 0.0) {
            let x = f.px(b as f64 * w + dx * w);
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{}" width="{}" height="{}" fill="{colour}"/>"#,
                f.py(v),
                r1(f.px(w / 2.0) - f.px(0.0)),
                r1(f.py(0.0) - f.py(v))
            );
        }
    }
    let _ = write!(
        out,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{INK}" stroke-dasharray="4 3"/><text x="{}" y="20" font-size="11">95th percentile of the scored images: {cut:.3}</text></svg>"#,
        f.px(cut as f64),
        f.top,
        f.px(cut as f64),
        f.top + f.height,
        f.left
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_has_one_cell_per_count_and_escapes_names() {
        let c = Confusion {
            rows: vec!["a<b".into(), "c".into()],
            columns: vec!["a<b".into(), "c".into(), "x".into()],
            counts: vec![vec![3, 1, 0], vec![0, 2, 2]],
        };
        let svg = heatmap(&c);
        assert_eq!(svg.matches("<rect ").count(), 6);
        assert!(svg.contains("a&lt;b → c: 1 of 4") && !svg.contains("a<b"));
        // full-share diagonal cells are the full blue; an empty cell is near-white
        assert!(svg.contains(&tint(BLUE, 0.15 + 0.85 * 0.75)));
        assert!(svg.contains("#fafafa"));
    }

    #[test]
    fn frame_maps_data_to_pixels() {
        let f = Frame::new(10.0, 20.0, 100.0, 50.0, (0.0, 1.0), (0.5, 1.0));
        assert_eq!((f.px(0.0), f.px(1.0), f.px(0.25)), (10.0, 110.0, 35.0));
        assert_eq!((f.py(0.5), f.py(1.0), f.py(0.75)), (70.0, 20.0, 45.0));
        assert_eq!(tint((0, 0, 0), 0.0), "rgb(255,255,255)");
        assert_eq!(tint((0, 100, 200), 1.0), "rgb(0,100,200)");
    }
}
