//! `report.html`: one self-contained page rendered from the [`Report`]. No script, no
//! external style sheet, font or image: the plots are inline SVG ([`super::svg`]) and the
//! thumbnails `data:` URIs ([`super::thumbs`]), so the file opens on a desktop with no
//! network and can be mailed or archived as it is.
//!
//! Sections, in the order an engineer reads them (each a `<section>` with this id):
//! `verdict`, `headline`, `per-class`, `confusion`, `confidence`, `galleries`,
//! `baseline`, `labels`, `line`, `host`, `unreadable`.

use super::interval::Estimate;
use super::report::{FrameRow, ImageRecord, Report, RuleOutcome};
use super::svg;
use super::thumbs::Thumbs;
use std::fmt::Write as _;
use std::path::Path;

/// The section ids, in page order.
pub const SECTIONS: [(&str, &str); 11] = [
    ("verdict", "Verdict"),
    ("headline", "Headline"),
    ("per-class", "Per class"),
    ("confusion", "Confusion"),
    ("confidence", "Confidence and thresholds"),
    ("galleries", "Galleries"),
    ("baseline", "Against the deployed model"),
    ("labels", "Training labels to look at"),
    ("line", "What the line sees"),
    ("host", "On this host"),
    ("unreadable", "Unreadable images"),
];

/// Thumbnails shown per gallery (the JSON lists every image).
pub const GALLERY: usize = 18;
/// Training images shown in the labels table (`to-verify.csv` lists every one).
pub const LABEL_ROWS: usize = 24;

/// Escapes text for HTML and SVG (both XML-like): the five special characters. Written
/// here: it is one match, and no crate of the workspace offers it.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

fn est(e: &Estimate) -> String {
    format!(
        "{} <span class=\"ci\">({:.1}–{:.1})</span>",
        pct(e.value),
        e.low * 100.0,
        e.high * 100.0
    )
}

fn opt_est(e: &Option<Estimate>) -> String {
    e.as_ref().map_or_else(|| "–".to_string(), est)
}

fn signed_pts(e: &Estimate) -> String {
    format!(
        "{:+.1} <span class=\"ci\">({:+.1} to {:+.1})</span>",
        e.value * 100.0,
        e.low * 100.0,
        e.high * 100.0
    )
}

/// The last two parts of a path (class folder and file), for captions.
fn short(path: &str) -> String {
    let p = Path::new(path);
    let file = p.file_name().map(|f| f.to_string_lossy().into_owned());
    let dir = p
        .parent()
        .and_then(|d| d.file_name())
        .map(|d| d.to_string_lossy().into_owned());
    match (dir, file) {
        (Some(d), Some(f)) => format!("{d}/{f}"),
        (None, Some(f)) => f,
        _ => path.to_string(),
    }
}

/// A cell shaded by a value in [0, 1] (red low, green high).
fn shaded(v: Option<f64>, text: &str) -> String {
    match v {
        None => format!("<td>{text}</td>"),
        Some(v) => {
            let hue = (v.clamp(0.0, 1.0) * 120.0).round();
            format!("<td style=\"background:hsl({hue},70%,90%)\">{text}</td>")
        }
    }
}

/// A plain cell.
fn td(text: impl std::fmt::Display) -> String {
    format!("<td>{text}</td>")
}

/// A right-aligned (number) cell.
fn num(text: impl std::fmt::Display) -> String {
    format!("<td class=\"num\">{text}</td>")
}

/// A table: the header (a name starting with `#` is a number column, right-aligned) and
/// one string of ready `<td>` cells per row.
fn table(o: &mut String, head: &[&str], rows: impl IntoIterator<Item = String>) {
    o.push_str("<table><tr>");
    for h in head {
        match h.strip_prefix('#') {
            Some(h) => {
                let _ = write!(o, "<th class=\"num\">{h}</th>");
            }
            None => {
                let _ = write!(o, "<th>{h}</th>");
            }
        }
    }
    o.push_str("</tr>");
    for r in rows {
        let _ = write!(o, "<tr>{r}</tr>");
    }
    o.push_str("</table>");
}

/// A two-column table of (name, value) rows.
fn facts(o: &mut String, rows: &[(&str, String)]) {
    o.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    o.push_str("</table>");
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;background:#fff}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#cfd8dc;font-size:13px}
nav{padding:8px 24px;background:#eceff1;font-size:13px;position:sticky;top:0;z-index:1}
nav a{margin-right:12px;color:#1e4e79;text-decoration:none}
section{padding:8px 24px 20px;border-bottom:1px solid #e0e0e0}
h2{font-size:18px;margin:14px 0 8px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f5f5f5}
td.num,th.num{text-align:right}
.ci{color:#666;font-size:11px}
.banner{font-size:34px;font-weight:bold;margin:4px 0;padding:6px 16px;display:inline-block;border-radius:6px}
.go .banner{background:#1b7837;color:#fff}
.nogo .banner{background:#b2182b;color:#fff}
.pass{color:#1b7837;font-weight:bold}
.fail{color:#b2182b;font-weight:bold}
.big{display:inline-block;margin:6px 24px 6px 0}
.big b{font-size:28px;display:block}
.plots{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.plots>div{max-width:440px}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure.thumb{margin:0;width:124px;font-size:11px;line-height:1.3}
figure.thumb img{display:block;max-width:112px;max-height:112px;border:1px solid #ccc}
figure.thumb.wrong img{border:2px solid #b2182b}
figure.thumb.right img{border:2px solid #1b7837}
figcaption{word-break:break-word}
.absent{color:#666;font-style:italic}
.note{color:#555;font-size:13px}
.pair{margin:8px 0 14px}
footer{padding:12px 24px;color:#666;font-size:12px}
"#;

/// Renders the page.
pub fn render(r: &Report, thumbs: &mut Thumbs) -> String {
    let b = &r.headline.bundle;
    let mut o = String::with_capacity(1 << 20);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} {}: {} — linesight validate</title><style>{STYLE}</style></head><body>",
        escape(&b.model_id),
        escape(&b.model_version),
        if r.verdict.go { "GO" } else { "NO-GO" },
    );
    let _ = write!(
        o,
        "<header><h1>Validation of {} {} ({})</h1><p>{} images of split <code>{}</code> of <code>{}</code> · {}</p></header><nav>",
        escape(&b.model_id),
        escape(&b.model_version),
        escape(&b.precision),
        r.headline.images,
        escape(&r.inputs.split),
        escape(&r.inputs.manifest),
        escape(&r.tool),
    );
    for (id, title) in SECTIONS {
        let _ = write!(o, "<a href=\"#{id}\">{title}</a>");
    }
    o.push_str("</nav>");
    verdict(&mut o, r);
    headline(&mut o, r);
    per_class(&mut o, r);
    confusion(&mut o, r, thumbs);
    confidence(&mut o, r);
    galleries(&mut o, r, thumbs);
    baseline(&mut o, r, thumbs);
    labels(&mut o, r, thumbs);
    line(&mut o, r, thumbs);
    host(&mut o, r);
    unreadable(&mut o, r);
    let _ = writeln!(
        o,
        "<footer>report.json schema version {} · {} · generated in {:.1} s · created {} (Unix time)</footer></body></html>",
        r.schema_version,
        escape(&r.tool),
        r.generation_seconds,
        r.created_unix
    );
    o
}

fn open_section(o: &mut String, id: &str, class: &str) {
    let title = SECTIONS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(id, |(_, t)| t);
    let _ = write!(o, "<section id=\"{id}\" class=\"{class}\"><h2>{title}</h2>");
}

fn absent(o: &mut String, text: &str) {
    let _ = write!(o, "<p class=\"absent\">{}</p></section>", escape(text));
}

fn verdict(o: &mut String, r: &Report) {
    let v = &r.verdict;
    open_section(o, "verdict", if v.go { "go" } else { "nogo" });
    let _ = write!(
        o,
        "<p class=\"banner\">{}</p><p>{}</p>",
        if v.go { "GO" } else { "NO-GO" },
        escape(&v.summary)
    );
    if !v.rules.is_empty() {
        let rows = v.rules.iter().map(|c| {
            format!(
                "{}{}<td class=\"{}\">{}</td>{}",
                td(format!("<code>{}</code>", escape(&c.rule))),
                num(c.value.map_or("–".into(), |v| format!("{v:.4}"))),
                if c.pass { "pass" } else { "fail" },
                if c.pass { "pass" } else { "FAIL" },
                td(escape(c.note.as_deref().unwrap_or("")))
            )
        });
        table(o, &["rule", "#value", "result", "note"], rows);
    }
    o.push_str("<p class=\"note\">Exit code of <code>linesight-train validate</code>: 0 go, 3 no-go, 2 the report could not be made.</p></section>");
}

fn headline(o: &mut String, r: &Report) {
    let h = &r.headline;
    let b = &h.bundle;
    open_section(o, "headline", "");
    let _ = write!(
        o,
        "<div class=\"big\">top-1 <b>{}</b><span class=\"ci\">{}</span></div><div class=\"big\">cACC <b>{}</b><span class=\"ci\">{}</span></div><div class=\"big\">sACC <b>{}</b><span class=\"ci\">{}</span></div>",
        est(&h.top1),
        escape(&h.top1_interval),
        est(&h.cacc),
        escape(&h.cacc_interval),
        opt_est(&h.sacc),
        escape(h.sacc_note.as_deref().unwrap_or(&h.sacc_interval)),
    );
    let sig = &b.signature;
    let rows: Vec<(&str, String)> = vec![
        (
            "images scored",
            format!("{} ({} unreadable)", h.images, h.unreadable),
        ),
        ("classes in the split", h.classes.to_string()),
        ("names predicted", h.names_predicted.to_string()),
        ("bundle", format!("<code>{}</code>", escape(&b.path))),
        (
            "model",
            format!(
                "{} {} ({} labels)",
                escape(&b.model_id),
                escape(&b.model_version),
                b.labels
            ),
        ),
        ("precision", escape(&b.precision)),
        (
            "size",
            format!(
                "{:.2} MB (ONNX {:.2} MB), format version {}",
                b.file_bytes as f64 / 1e6,
                b.onnx_bytes as f64 / 1e6,
                b.format_version
            ),
        ),
        (
            "backbone / method",
            format!("{} / {}", escape(&b.backbone), escape(&b.method)),
        ),
        (
            "model sha256",
            format!("<code>{}</code>", escape(&b.model_sha256)),
        ),
        (
            "signature",
            format!(
                "<span class=\"{}\">{}</span>",
                if sig.verifies { "pass" } else { "fail" },
                escape(&sig.detail)
            ),
        ),
        (
            "self-test (as install runs it)",
            if b.self_test.passed {
                format!(
                    "<span class=\"pass\">passes</span>: {} vectors, max |logit diff| {:.2e}",
                    b.self_test.vectors,
                    b.self_test.max_abs_diff.unwrap_or(0.0)
                )
            } else {
                format!(
                    "<span class=\"fail\">FAILS</span>: {}",
                    escape(b.self_test.error.as_deref().unwrap_or(""))
                )
            },
        ),
        (
            "decision rule now",
            format!(
                "min_score {}, min_margin {}, {} per-class thresholds",
                b.decision.min_score,
                b.decision.min_margin,
                b.decision.per_class_min_score.len()
            ),
        ),
        (
            "export parity",
            format!(
                "{} images, top-1 agreement {}, max |logit diff| {:.2e}",
                b.parity.images,
                pct(b.parity.top1_agreement as f64),
                b.parity.max_abs_logit_diff
            ),
        ),
    ];
    facts(o, &rows);
    o.push_str("</section>");
}

fn per_class(o: &mut String, r: &Report) {
    open_section(o, "per-class", "");
    o.push_str("<p class=\"note\">Worst first (lowest F1). Intervals: Wilson, 95 %. A name with no image in the split is a name the model learnt that the test set does not have: its predictions are all wrong.</p>");
    let rows = r.per_class.iter().map(|c| {
        [
            td(escape(&c.name)),
            num(c.support),
            num(c.predicted),
            num(c.correct),
            shaded(c.precision.map(|e| e.value), &opt_est(&c.precision)),
            shaded(c.recall.map(|e| e.value), &opt_est(&c.recall)),
            shaded(Some(c.f1), &format!("{:.3}", c.f1)),
        ]
        .concat()
    });
    table(
        o,
        &[
            "class",
            "#support",
            "#predicted",
            "#right",
            "precision",
            "recall",
            "#F1",
        ],
        rows,
    );
    o.push_str("</section>");
}

fn card(o: &mut String, thumbs: &mut Thumbs, img: &ImageRecord, lines: &[String]) {
    let class = if img.correct { "right" } else { "wrong" };
    let _ = write!(
        o,
        "<figure class=\"thumb {class}\" title=\"{}\">",
        escape(&img.path)
    );
    match thumbs.uri(Path::new(&img.path)) {
        Some(uri) => {
            let _ = write!(
                o,
                "<img src=\"{uri}\" alt=\"{}\">",
                escape(&short(&img.path))
            );
        }
        None => o.push_str("<div class=\"absent\">(no thumbnail)</div>"),
    }
    let _ = write!(o, "<figcaption><b>{}</b>", escape(&short(&img.path)));
    for l in lines {
        let _ = write!(o, "<br>{l}");
    }
    o.push_str("</figcaption></figure>");
}

fn image_lines(img: &ImageRecord) -> Vec<String> {
    vec![
        format!("truth: {}", escape(&img.truth)),
        format!("predicted: {}", escape(&img.predicted)),
        format!("score {:.3}, margin {:.3}", img.score, img.margin),
    ]
}

fn gallery(o: &mut String, r: &Report, thumbs: &mut Thumbs, idx: &[usize]) {
    o.push_str("<div class=\"grid\">");
    for &i in idx.iter().take(GALLERY) {
        card(o, thumbs, &r.images[i], &image_lines(&r.images[i]));
    }
    o.push_str("</div>");
    if idx.len() > GALLERY {
        let _ = write!(
            o,
            "<p class=\"note\">{} more in report.json.</p>",
            idx.len() - GALLERY
        );
    }
}

fn confusion(o: &mut String, r: &Report, thumbs: &mut Thumbs) {
    open_section(o, "confusion", "");
    o.push_str("<p class=\"note\">Rows: true class; columns: predicted name. Colour: share of the row (blue: right, red: confused). Hover a cell for its count.</p>");
    o.push_str(&svg::heatmap(&r.confusion));
    o.push_str("<h3>Most confused pairs</h3>");
    if r.confused_pairs.is_empty() {
        o.push_str("<p class=\"absent\">No confusion on these images.</p>");
    }
    for p in &r.confused_pairs {
        let _ = write!(
            o,
            "<div class=\"pair\"><b>{}</b> taken for <b>{}</b>: {} images ({} of the class)<div class=\"grid\">",
            escape(&p.truth),
            escape(&p.predicted),
            p.count,
            pct(p.share)
        );
        for &i in &p.examples {
            let img = &r.images[i];
            card(o, thumbs, img, &[format!("score {:.3}", img.score)]);
        }
        o.push_str("</div></div>");
    }
    o.push_str("</section>");
}

/// A row of the thresholds table: what a rule accepted.
fn accepted_row(
    name: &str,
    threshold: &str,
    accepted: usize,
    total: usize,
    coverage: f64,
    precision: &Option<Estimate>,
) -> String {
    [
        td(name),
        td(threshold),
        num(format!("{accepted} of {total}")),
        num(pct(coverage)),
        td(opt_est(precision)),
    ]
    .concat()
}

fn outcome_row(name: &str, threshold: &str, x: &RuleOutcome) -> String {
    accepted_row(
        name,
        threshold,
        x.accepted,
        x.total,
        x.coverage,
        &x.precision,
    )
}

fn confidence(o: &mut String, r: &Report) {
    let c = &r.confidence;
    open_section(o, "confidence", "");
    let chosen = c
        .curve
        .iter()
        .find(|p| p.threshold == c.global.rule.min_score)
        .map(|p| (p.coverage, p.accuracy, p.threshold));
    let _ = write!(
        o,
        "<div class=\"plots\"><div>{}<p class=\"note\">Expected calibration error {:.3} (10 bins): the share-weighted gap between the bars and the diagonal.</p></div><div>{}<p class=\"note\">Raising the reject threshold keeps fewer images (left) and, if the scores mean something, more of them right.</p></div></div>",
        svg::reliability(&c.bins, c.ece),
        c.ece,
        svg::coverage(&c.curve, c.target_precision, chosen)
    );
    let _ = write!(
        o,
        "<h3>Recommended thresholds for precision {}</h3><p class=\"note\">The lowest thresholds whose accepted images are right at least {} of the time on these images (chosen on the same images: expect a little less on new ones; the interval says how much the sample supports). They are in <code>thresholds.toml</code>; apply them with <code>linesight-train thresholds --bundle B --set thresholds.toml --out B.tuned.lsb</code> (thresholds travel in the bundle, not in edge.toml).</p>",
        pct(c.target_precision),
        pct(c.target_precision)
    );
    let now = &c.current_rule.rule;
    let mut rows = vec![
        outcome_row(
            "the bundle's rule now",
            &format!(
                "min_score {}{}",
                now.min_score,
                if now.per_class_min_score.is_empty() {
                    ""
                } else {
                    " and per class"
                }
            ),
            &c.current_rule,
        ),
        outcome_row("global", &c.global.rule.min_score.to_string(), &c.global),
        outcome_row(
            "<b>per class (thresholds.toml)</b>",
            "below",
            &c.per_class_rule,
        ),
    ];
    for (name, h) in [
        ("global", &c.held_out_global),
        ("per class", &c.held_out_per_class),
    ] {
        rows.push(accepted_row(
            &format!("{name}, two-fold check"),
            "chosen on half, scored on the other",
            h.accepted,
            h.total,
            h.coverage,
            &h.precision,
        ));
    }
    table(
        o,
        &[
            "rule",
            "threshold",
            "#accepted",
            "#coverage",
            "precision (Wilson)",
        ],
        rows,
    );
    o.push_str("<p class=\"note\">The two-fold rows are what to expect on new images: thresholds chosen on the even-numbered images are applied to the odd-numbered ones and the other way round. Per-class thresholds rest on few images each and flatter themselves most.</p>");
    o.push_str("<h3>Accuracy at fixed coverage</h3>");
    let rows = [1.0, 0.9, 0.8, 0.7, 0.5].iter().filter_map(|level| {
        let p = c.curve.iter().find(|p| p.coverage >= level - 1e-9)?;
        Some(
            [
                num(pct(p.coverage)),
                num(format!("{:.4}", p.threshold)),
                num(pct(p.accuracy)),
            ]
            .concat(),
        )
    });
    table(
        o,
        &["#coverage", "#threshold", "#accuracy of the accepted"],
        rows,
    );
    o.push_str("<h3>Per-class thresholds</h3>");
    let rows = c.per_class.iter().map(|t| {
        let (pred, acc, right, note) = match &t.choice {
            Some(ch) => (
                ch.total.to_string(),
                ch.accepted.to_string(),
                ch.correct.to_string(),
                if ch.reached {
                    String::new()
                } else {
                    "no threshold reaches the target: never accepted".into()
                },
            ),
            None => (
                "0".into(),
                "–".into(),
                "–".into(),
                "never predicted here: the global threshold".into(),
            ),
        };
        [
            td(escape(&t.label)),
            num(format!("{:.4}", t.threshold)),
            num(pred),
            num(acc),
            num(right),
            td(escape(&note)),
        ]
        .concat()
    });
    table(
        o,
        &[
            "label",
            "#threshold",
            "#predicted",
            "#accepted",
            "#right",
            "note",
        ],
        rows,
    );
    o.push_str("</section>");
}

fn galleries(o: &mut String, r: &Report, thumbs: &mut Thumbs) {
    open_section(o, "galleries", "");
    let _ = write!(
        o,
        "<h3>Confident mistakes ({})</h3>",
        r.galleries.confident_mistakes.len()
    );
    gallery(o, r, thumbs, &r.galleries.confident_mistakes);
    o.push_str("<h3>Most uncertain (smallest margin between the two best names)</h3>");
    gallery(o, r, thumbs, &r.galleries.most_uncertain);
    let wrong: Vec<&ImageRecord> = r.images.iter().filter(|i| !i.correct).collect();
    let _ = write!(
        o,
        "<details><summary>All {} misclassified files</summary>",
        wrong.len()
    );
    let rows = wrong.iter().map(|i| {
        [
            td(format!("<code>{}</code>", escape(&i.path))),
            td(escape(&i.truth)),
            td(escape(&i.predicted)),
            num(format!("{:.3}", i.score)),
        ]
        .concat()
    });
    table(o, &["file", "truth", "predicted", "#score"], rows);
    o.push_str("</details></section>");
}

fn baseline(o: &mut String, r: &Report, thumbs: &mut Thumbs) {
    open_section(o, "baseline", "");
    match &r.baseline {
        None => {
            o.push_str("<p class=\"absent\">No deployed model given (--baseline DEPLOYED.lsb).</p>")
        }
        Some(b) => {
            let _ = write!(
                o,
                "<p>Deployed: <b>{} {}</b> ({}, <code>{}</code>), top-1 {}. New minus deployed: <b>{}</b> points ({}).{}</p>",
                escape(&b.bundle.model_id),
                escape(&b.bundle.model_version),
                escape(&b.bundle.precision),
                escape(&b.bundle.path),
                est(&b.top1),
                signed_pts(&b.delta),
                escape(&b.delta_interval),
                b.max_class_regression.map_or(String::new(), |m| format!(" Largest class regression: {:.1} points.", m * 100.0)),
            );
            if !b.labels_removed.is_empty() || !b.labels_added.is_empty() {
                let _ = write!(
                    o,
                    "<p class=\"note\">Labels only the deployed model has: {}. Labels only the new one has: {}.</p>",
                    escape(&b.labels_removed.join(", ")),
                    escape(&b.labels_added.join(", "))
                );
            }
            o.push_str(&svg::deltas(&b.per_class));
            let rows = b.per_class.iter().map(|d| {
                [
                    td(escape(&d.name)),
                    num(d.support),
                    num(pct(d.base_recall)),
                    num(pct(d.new_recall)),
                    shaded(Some((d.delta.value + 1.0) / 2.0), &signed_pts(&d.delta)),
                ]
                .concat()
            });
            table(
                o,
                &[
                    "class",
                    "#images",
                    "#deployed recall",
                    "#new recall",
                    "delta, points (Newcombe)",
                ],
                rows,
            );
            let _ = write!(o, "<h3>Right → wrong ({})</h3>", b.right_to_wrong.len());
            flip_gallery(o, r, thumbs, &b.right_to_wrong);
            let _ = write!(o, "<h3>Wrong → right ({})</h3>", b.wrong_to_right.len());
            flip_gallery(o, r, thumbs, &b.wrong_to_right);
        }
    }
    o.push_str("<h3>int8 against its f32 twin</h3>");
    match &r.twin {
        None => o.push_str("<p class=\"absent\">An f32 bundle: nothing was quantised.</p>"),
        Some(t) => {
            let _ = write!(
                o,
                "<p>Top-1 agreement {} — {}.</p>",
                opt_est(&t.agreement),
                escape(&t.source)
            );
            let rows = t.per_class.iter().map(|c| {
                [
                    td(escape(&c.name)),
                    num(c.reference),
                    num(c.kept),
                    shaded(c.agreement.map(|e| e.value), &opt_est(&c.agreement)),
                ]
                .concat()
            });
            table(
                o,
                &[
                    "class (as the f32 twin decided)",
                    "#f32 decisions",
                    "#kept by int8",
                    "agreement (Wilson)",
                ],
                rows,
            );
        }
    }
    o.push_str("</section>");
}

fn flip_gallery(o: &mut String, r: &Report, thumbs: &mut Thumbs, idx: &[usize]) {
    o.push_str("<div class=\"grid\">");
    for &i in idx.iter().take(GALLERY) {
        let img = &r.images[i];
        let mut lines = image_lines(img);
        lines.insert(
            2,
            format!(
                "deployed: {}",
                escape(img.baseline.as_deref().unwrap_or("–"))
            ),
        );
        card(o, thumbs, img, &lines);
    }
    o.push_str("</div>");
    if idx.len() > GALLERY {
        let _ = write!(
            o,
            "<p class=\"note\">{} more in report.json.</p>",
            idx.len() - GALLERY
        );
    }
}

fn labels(o: &mut String, r: &Report, thumbs: &mut Thumbs) {
    open_section(o, "labels", "");
    let Some(l) = &r.labels else {
        return absent(
            o,
            "No refined.json given (--refined refined.json [--targets CKPT/targets.jsonl]).",
        );
    };
    let _ = write!(
        o,
        "<p>{} of the {} training images get different names from the MLLM, the neighbour vote{}, and this bundle. All are in <code>{}</code> (label column empty): fill in the right name (or delete the row), then <code>linesight-train refine ... --verified {}</code>.</p>",
        l.disagreeing,
        l.images,
        if l.targets.is_some() { ", the final training target" } else { "" },
        escape(&l.csv),
        escape(&l.csv)
    );
    let o_ = |v: &Option<String>| escape(v.as_deref().unwrap_or("–"));
    let rows: Vec<String> = l
        .rows
        .iter()
        .take(LABEL_ROWS)
        .map(|row| {
            let p = row.path.display().to_string();
            let thumb = thumbs.uri(&row.path).map_or_else(String::new, |u| {
                format!("<img src=\"{u}\" alt=\"\" style=\"max-width:72px;max-height:72px\"><br>")
            });
            [
                format!(
                    "<td title=\"{}\">{thumb}<small>{}</small></td>",
                    escape(&p),
                    escape(&short(&p))
                ),
                td(format!(
                    "{}{}",
                    o_(&row.mllm),
                    row.mllm_class
                        .as_ref()
                        .map_or(" <span class=\"ci\">(no class)</span>".to_string(), |c| {
                            format!(" <span class=\"ci\">→ {}</span>", escape(c))
                        })
                )),
                td(o_(&row.vote)),
                td(format!(
                    "{}{}",
                    o_(&row.target),
                    row.clean.map_or(String::new(), |c| format!(
                        " <span class=\"ci\">clean {c:.2}</span>"
                    ))
                )),
                td(format!(
                    "{}{}",
                    o_(&row.model),
                    row.model_score.map_or(String::new(), |s| format!(
                        " <span class=\"ci\">{s:.2}</span>"
                    ))
                )),
                num(row.distinct),
            ]
            .concat()
        })
        .collect();
    table(
        o,
        &[
            "",
            "MLLM said",
            "vote",
            "final target",
            "this bundle",
            "#names",
        ],
        rows,
    );
    o.push_str("</section>");
}

fn line(o: &mut String, r: &Report, thumbs: &mut Thumbs) {
    open_section(o, "line", "");
    let Some(l) = &r.line else {
        return absent(o, "No uncertain folder given (--uncertain DIR from `linesight-edge export-uncertain --out DIR`).");
    };
    let _ = write!(
        o,
        "<p>{} frames from <code>{}</code>",
        l.frames.len(),
        escape(&l.dir)
    );
    match (l.beyond_reference, l.reference_p95) {
        (Some(share), Some(p95)) => {
            let _ = write!(
                o,
                ": {} lie farther from the {} training images than 95 % of the scored images do (cosine distance > {:.3}); median distance {:.3} against {:.3} for the scored images.</p>",
                pct(share),
                l.training_images,
                p95,
                l.median_frame_distance.unwrap_or(0.0),
                l.median_reference_distance.unwrap_or(0.0)
            );
            let d: Vec<f32> = l.frames.iter().filter_map(|f| f.distance).collect();
            o.push_str(&svg::drift(&l.reference_distances, &d, p95));
        }
        _ => {
            let _ = write!(
                o,
                ". No drift figure: {}.</p>",
                escape(l.drift_note.as_deref().unwrap_or("no embeddings"))
            );
        }
    }
    let mut by_box: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut by_new: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in &l.frames {
        *by_box.entry(f.decision.label.as_str()).or_default() += 1;
        *by_new
            .entry(if f.new_accepted {
                f.new_label.as_str()
            } else {
                "reject"
            })
            .or_default() += 1;
    }
    let list = |m: &std::collections::BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, v)| format!("{} {v}", escape(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        o,
        "<p class=\"note\">The box decided: {}. This bundle with the recommended thresholds: {}.{}</p><div class=\"grid\">",
        list(&by_box),
        list(&by_new),
        if l.reference_p95.is_some() { " Frames farthest from the training set first." } else { "" }
    );
    // farthest from the training set first: what the line sees that training did not
    let mut shown: Vec<&FrameRow> = l.frames.iter().collect();
    shown.sort_by(|a, b| {
        b.distance
            .unwrap_or(0.0)
            .total_cmp(&a.distance.unwrap_or(0.0))
    });
    for f in shown.into_iter().take(GALLERY * 2) {
        let _ = write!(o, "<figure class=\"thumb\" title=\"{}\">", escape(&f.file));
        if let Some(u) = thumbs.uri(Path::new(&f.file)) {
            let _ = write!(o, "<img src=\"{u}\" alt=\"\">");
        }
        let _ = write!(
            o,
            "<figcaption><b>{}</b><br>box ({} {}): {} {:.2}{}<br>new: {} {:.2}{}<br>{}</figcaption></figure>",
            escape(&short(&f.file)),
            escape(&f.decision.model),
            escape(&f.decision.model_version),
            escape(&f.decision.label),
            f.decision.score,
            if f.decision.uncertain { " (uncertain)" } else { "" },
            escape(&f.new_label),
            f.new_score,
            if f.new_accepted { "" } else { " (reject)" },
            f.distance.map_or(String::new(), |d| format!("distance {d:.3}"))
        );
    }
    o.push_str("</div>");
    if !l.bad_entries.is_empty() {
        let _ = write!(
            o,
            "<p class=\"fail\">{} entries could not be used:</p><ul>",
            l.bad_entries.len()
        );
        for b in &l.bad_entries {
            let _ = write!(
                o,
                "<li><code>{}</code>: {}</li>",
                escape(&b.path),
                escape(&b.error)
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>");
}

fn host(o: &mut String, r: &Report) {
    open_section(o, "host", "");
    let Some(h) = &r.host else {
        let why = match &r.host_error {
            Some(e) => format!("The benchmark failed: {e}"),
            None => "Not measured (--bench-iterations 0).".to_string(),
        };
        return absent(o, &why);
    };
    let rows = [
        ("measured by", escape(&h.measured_by)),
        ("build", escape(&h.build)),
        ("CPU", escape(&h.cpu)),
        ("threads", h.threads.to_string()),
        (
            "load (read, verify, plan, self-test)",
            format!("{:.1} ms", h.load_ms),
        ),
        (
            "per image (preprocess + inference)",
            format!(
                "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms over {} images",
                h.p50_ms, h.p95_ms, h.p99_ms, h.iterations
            ),
        ),
        ("inference alone, p50", format!("{:.2} ms", h.infer_p50_ms)),
        (
            "preprocessing alone, p50",
            format!("{:.2} ms", h.preprocess_p50_ms),
        ),
        (
            "peak RSS",
            h.peak_rss_bytes
                .map_or("unknown".into(), |b| format!("{:.1} MB", b as f64 / 1e6)),
        ),
    ];
    facts(o, &rows);
    let _ = write!(o, "<p class=\"note\">{}</p></section>", escape(&h.note));
}

fn unreadable(o: &mut String, r: &Report) {
    open_section(o, "unreadable", "");
    if r.unreadable.is_empty() {
        return absent(o, "Every manifest row of the split was read and scored.");
    }
    let _ = write!(
        o,
        "<p class=\"fail\">{} manifest rows could not be scored (not counted in any figure):</p>",
        r.unreadable.len()
    );
    let rows = r.unreadable.iter().map(|u| {
        [
            td(format!("<code>{}</code>", escape(&u.path))),
            td(escape(&u.error)),
        ]
        .concat()
    });
    table(o, &["file", "problem"], rows);
    o.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let mut o = String::new();
        table(&mut o, &["a", "#n"], [[td("x"), num(3)].concat()]);
        assert_eq!(o, "<table><tr><th>a</th><th class=\"num\">n</th></tr><tr><td>x</td><td class=\"num\">3</td></tr></table>");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<a href="x">Tom's & Jerry</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom&#39;s &amp; Jerry&lt;/a&gt;"
        );
        assert_eq!(short("/data/birds/Blue_Jay/0001.jpg"), "Blue_Jay/0001.jpg");
        assert_eq!(short("x.jpg"), "x.jpg");
    }
}
