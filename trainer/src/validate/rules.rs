//! The go / no-go rules of `validate --require`: `METRIC OP VALUE` separated by commas,
//! e.g. `top1>=0.80,min_class_recall>=0.5,max_class_regression<=0.05`.
//!
//! A rule whose figure could not be computed (no `--baseline` for a regression rule, no
//! sentence model for sACC) fails: a release gate that asked for a check must not pass
//! without it.

use serde::Serialize;

/// The figures a rule can name, with what each means (printed in errors and `--help`).
pub const METRICS: [(&str, &str); 15] = [
    (
        "top1",
        "share of images whose predicted name is the true name",
    ),
    ("top1_low", "lower end of top1's 95 % Wilson interval"),
    (
        "cacc",
        "clustering accuracy (Hungarian matching of names to classes)",
    ),
    ("sacc", "semantic accuracy (needs the sentence model)"),
    ("min_class_recall", "lowest recall of a true class"),
    (
        "min_class_precision",
        "lowest precision of a predicted name",
    ),
    ("min_class_f1", "lowest F1 of a class"),
    ("ece", "expected calibration error (10 bins)"),
    (
        "max_class_regression",
        "largest drop of a class's recall against --baseline",
    ),
    ("top1_delta", "top1 minus the --baseline's top1"),
    (
        "int8_agreement",
        "top-1 agreement of an int8 bundle with its f32 twin (1 for f32)",
    ),
    (
        "min_class_int8_agreement",
        "lowest per-class agreement with the f32 twin",
    ),
    (
        "coverage",
        "share accepted by the recommended per-class thresholds",
    ),
    (
        "unreadable",
        "manifest rows whose image is missing or corrupt",
    ),
    ("p95_ms", "p95 latency per image on this host (ms)"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<")]
    Lt,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Ge => value >= threshold,
            Op::Le => value <= threshold,
            Op::Gt => value > threshold,
            Op::Lt => value < threshold,
        }
    }
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub metric: String,
    pub op: Op,
    pub threshold: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RuleError {
    #[error("--require: `{0}` is not METRIC OP VALUE (OP one of >= <= > <), e.g. `top1>=0.8`")]
    Syntax(String),
    #[error("--require: unknown metric `{name}`; known: {known}")]
    UnknownMetric { name: String, known: String },
    #[error("--require: `{0}` is not a number")]
    Value(String),
}

/// Parses `--require`; an empty text is no rule.
pub fn parse(text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // two-character operators first, so `>=` is not read as `>`
        let found = [Op::Ge, Op::Le, Op::Gt, Op::Lt]
            .into_iter()
            .find_map(|op| part.find(op.as_str()).map(|at| (op, at)));
        let Some((op, at)) = found else {
            return Err(RuleError::Syntax(part.to_string()));
        };
        let metric = part[..at].trim();
        let value = part[at + op.as_str().len()..].trim();
        if metric.is_empty() || value.is_empty() {
            return Err(RuleError::Syntax(part.to_string()));
        }
        if !METRICS.iter().any(|(m, _)| *m == metric) {
            return Err(RuleError::UnknownMetric {
                name: metric.to_string(),
                known: METRICS
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let threshold: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| RuleError::Value(value.to_string()))?;
        rules.push(Rule {
            metric: metric.to_string(),
            op,
            threshold,
        });
    }
    Ok(rules)
}

/// A figure for a rule: its value, or why there is none.
pub type Figure = Result<f64, String>;

/// One rule checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checked {
    pub rule: String,
    pub metric: String,
    pub op: Op,
    pub threshold: f64,
    /// None when the figure could not be computed (see `note`).
    pub value: Option<f64>,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The verdict: go when every rule passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub go: bool,
    pub rules: Vec<Checked>,
    /// One line for people: `go`, or `no-go: ` and the failed rules.
    pub summary: String,
}

/// Checks each rule against `figure(metric)`.
pub fn check(rules: &[Rule], figure: impl Fn(&str) -> Figure) -> Verdict {
    let checked: Vec<Checked> = rules
        .iter()
        .map(|r| {
            let (value, note) = match figure(&r.metric) {
                Ok(v) => (Some(v), None),
                Err(why) => (None, Some(why)),
            };
            Checked {
                rule: format!("{}{}{}", r.metric, r.op.as_str(), r.threshold),
                metric: r.metric.clone(),
                op: r.op,
                threshold: r.threshold,
                value,
                pass: value.is_some_and(|v| r.op.holds(v, r.threshold)),
                note,
            }
        })
        .collect();
    let failed: Vec<String> = checked
        .iter()
        .filter(|c| !c.pass)
        .map(|c| match (c.value, &c.note) {
            (Some(v), _) => format!("{} (is {})", c.rule, round4(v)),
            (None, Some(n)) => format!("{} ({n})", c.rule),
            (None, None) => c.rule.clone(),
        })
        .collect();
    let go = failed.is_empty();
    let summary = if rules.is_empty() {
        "go: no rule was required (--require)".to_string()
    } else if go {
        format!("go: all {} rules pass", rules.len())
    } else {
        format!("no-go: {}", failed.join("; "))
    };
    Verdict {
        go,
        rules: checked,
        summary,
    }
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_example() {
        let r = parse(
            "top1>=0.80, min_class_recall>=0.5,max_class_regression<=0.05,int8_agreement>=0.99",
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].metric.as_str(), r[0].op, r[0].threshold),
            ("top1", Op::Ge, 0.8)
        );
        assert_eq!(
            (r[2].metric.as_str(), r[2].op),
            ("max_class_regression", Op::Le)
        );
        assert_eq!(parse("ece<0.1").unwrap()[0].op, Op::Lt);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        assert!(matches!(parse("top1=0.8"), Err(RuleError::Syntax(_))));
        assert!(matches!(parse(">=0.8"), Err(RuleError::Syntax(_))));
        let e = parse("top5>=0.8").unwrap_err();
        assert!(
            e.to_string().contains("unknown metric `top5`") && e.to_string().contains("top1_low")
        );
        assert_eq!(parse("top1>=high"), Err(RuleError::Value("high".into())));
        assert_eq!(parse("top1>=NaN"), Err(RuleError::Value("NaN".into())));
    }

    #[test]
    fn verdict_by_hand() {
        let rules = parse("top1>=0.8,max_class_regression<=0.05,ece<0.1").unwrap();
        let fig = |m: &str| match m {
            "top1" => Ok(0.81),
            "ece" => Ok(0.1),
            _ => Err("no --baseline".to_string()),
        };
        let v = check(&rules, fig);
        assert!(!v.go);
        assert!(v.rules[0].pass);
        assert!(!v.rules[1].pass && v.rules[1].value.is_none());
        assert!(!v.rules[2].pass, "0.1 < 0.1 is false");
        assert_eq!(
            v.summary,
            "no-go: max_class_regression<=0.05 (no --baseline); ece<0.1 (is 0.1)"
        );
        let v = check(&parse("top1>=0.8").unwrap(), fig);
        assert!(v.go && v.summary == "go: all 1 rules pass");
        assert!(check(&[], fig).go);
    }
}
