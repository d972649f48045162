//! `label diff`: how names drift between two answer logs (another model, another prompt,
//! another day). Images are matched by content hash; names are compared in a light normal
//! form (case, punctuation, spacing, a leading article and a parenthesised addition such as
//! a scientific name ignored), so that drift counts changed names, not changed typography.

use super::answer::Status;
use super::cache::{self, Record, Round};
use crate::metrics::canonical;
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

/// One side of a comparison: a log, optionally narrowed to one model and/or prompt.
#[derive(Debug, Clone)]
pub struct Side {
    pub log: PathBuf,
    pub model: Option<String>,
    /// A prefix of the prompt sha256.
    pub prompt: Option<String>,
}

/// What one side held.
#[derive(Debug, Clone, Serialize)]
pub struct SideSummary {
    pub log: PathBuf,
    /// Naming answers selected (latest per image).
    pub images: usize,
    /// Models and prompt hashes among the selected answers, with counts.
    pub models: BTreeMap<String, usize>,
    pub prompts: BTreeMap<String, usize>,
    pub statuses: BTreeMap<Status, usize>,
    pub distinct_names: usize,
}

/// Drift of one name.
#[derive(Debug, Clone, Serialize)]
pub struct NameDrift {
    /// Name in [`comparable`] form (`<refused>` / `<malformed>` for answers without one).
    pub name: String,
    /// Images with this name in A / in B (among images in both).
    pub in_a: usize,
    pub in_b: usize,
    /// Images with this name in both.
    pub kept: usize,
    /// What the images named this in A are named in B instead (most frequent first, top 5).
    pub became: Vec<(String, usize)>,
}

/// The `label diff` report.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub a: SideSummary,
    pub b: SideSummary,
    /// Images answered in both.
    pub images_compared: usize,
    pub only_in_a: usize,
    pub only_in_b: usize,
    pub unchanged: usize,
    pub changed: usize,
    /// changed / images_compared.
    pub changed_share: f64,
    /// Per name, the names with the most churn first.
    pub per_name: Vec<NameDrift>,
}

/// `"The Horned Grebe (Podiceps auritus)."` -> `"horned grebe"`.
pub fn comparable(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    let mut depth = 0usize;
    for ch in name.chars() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(ch),
            _ => {}
        }
    }
    let c = canonical(&plain);
    for article in ["the ", "a ", "an "] {
        if let Some(rest) = c.strip_prefix(article) {
            return rest.to_string();
        }
    }
    c
}

fn name_key(r: &Record) -> String {
    match (&r.name, r.status) {
        (Some(n), _) => comparable(n),
        (None, Status::Refused) => "<refused>".into(),
        (None, _) => "<malformed>".into(),
    }
}

/// The latest naming answer (sample 0) per image on one side.
fn select(side: &Side) -> Result<(HashMap<String, Record>, SideSummary)> {
    let (records, repair) = cache::read(&side.log)?;
    if repair.torn_last_line || repair.corrupt_lines > 0 {
        tracing::warn!(log = %side.log.display(), ?repair, "the log has a torn or corrupt line; it is skipped");
    }
    let mut latest: HashMap<String, Record> = HashMap::new();
    for r in records {
        let wanted = r.round == Round::Name
            && r.sample == 0
            && side.model.as_deref().is_none_or(|m| r.model == m)
            && side
                .prompt
                .as_deref()
                .is_none_or(|p| r.prompt_sha256.starts_with(p));
        if wanted {
            latest.insert(r.image_sha256.clone(), r);
        }
    }
    if latest.is_empty() {
        bail!(
            "no naming answers in `{}` (with the given --model / --prompt filters)",
            side.log.display()
        );
    }
    let mut s = SideSummary {
        log: side.log.clone(),
        images: latest.len(),
        models: BTreeMap::new(),
        prompts: BTreeMap::new(),
        statuses: BTreeMap::new(),
        distinct_names: latest.values().map(name_key).collect::<BTreeSet<_>>().len(),
    };
    for r in latest.values() {
        *s.models.entry(r.model.clone()).or_default() += 1;
        *s.prompts.entry(r.prompt_sha256.clone()).or_default() += 1;
        *s.statuses.entry(r.status).or_default() += 1;
    }
    Ok((latest, s))
}

/// Compares two sides. Fails when a log cannot be read or has no selected answers.
pub fn diff(a: &Side, b: &Side) -> Result<DriftReport> {
    let (la, sa) = select(a)?;
    let (lb, sb) = select(b)?;
    let mut in_a: BTreeMap<String, usize> = BTreeMap::new();
    let mut in_b: BTreeMap<String, usize> = BTreeMap::new();
    let mut kept: BTreeMap<String, usize> = BTreeMap::new();
    let mut became: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let (mut compared, mut changed) = (0, 0);
    for (sha, ra) in &la {
        let Some(rb) = lb.get(sha) else { continue };
        compared += 1;
        let (na, nb) = (name_key(ra), name_key(rb));
        *in_a.entry(na.clone()).or_default() += 1;
        *in_b.entry(nb.clone()).or_default() += 1;
        if na == nb {
            *kept.entry(na).or_default() += 1;
        } else {
            changed += 1;
            *became.entry(na).or_default().entry(nb).or_default() += 1;
        }
    }
    let names: BTreeSet<&String> = in_a.keys().chain(in_b.keys()).collect();
    let mut per_name: Vec<NameDrift> = names
        .into_iter()
        .map(|n| {
            let mut to: Vec<(String, usize)> = became
                .get(n)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            to.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
            to.truncate(5);
            NameDrift {
                name: n.clone(),
                in_a: in_a.get(n).copied().unwrap_or(0),
                in_b: in_b.get(n).copied().unwrap_or(0),
                kept: kept.get(n).copied().unwrap_or(0),
                became: to,
            }
        })
        .collect();
    per_name.sort_by(|x, y| {
        let churn = |d: &NameDrift| (d.in_a - d.kept) + (d.in_b - d.kept);
        churn(y).cmp(&churn(x)).then_with(|| x.name.cmp(&y.name))
    });
    Ok(DriftReport {
        images_compared: compared,
        only_in_a: la.len() - compared,
        only_in_b: lb.len() - compared,
        unchanged: compared - changed,
        changed,
        changed_share: if compared == 0 {
            0.0
        } else {
            changed as f64 / compared as f64
        },
        per_name,
        a: sa,
        b: sb,
    })
}

#[cfg(test)]
mod tests {
    use super::comparable;

    #[test]
    fn comparable_names_ignore_typography() {
        assert_eq!(
            comparable("The Horned Grebe (Podiceps auritus)."),
            "horned grebe"
        );
        assert_eq!(comparable("ANNA'S HUMMINGBIRD"), "annas hummingbird");
        assert_eq!(comparable("a small bird"), "small bird");
    }
}
