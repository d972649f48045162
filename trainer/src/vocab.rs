//! Vocabulary canonicalisation: from the names an MLLM gave (in every surface form) to the
//! classes a model is trained on.
//!
//! Steps, in order (each recorded in [`Vocabulary`] so the user can see why a name went):
//! 1. normalize every answer to a key: scientific names in parentheses and wrapping
//!    phrases ("the", "a", "some kind of", "... of some sort") removed, then
//!    [`canonical`] (case, punctuation, apostrophes);
//! 2. drop generic names: refusals-as-names ("unknown"), the category itself and the
//!    category with modifiers ("a small bird"), and one-word names that are the last word
//!    of another name (a hypernym: "grebe" beside "horned grebe");
//! 3. merge plural into singular keys when both occur;
//! 4. merge synonyms by sentence-embedding similarity (all-MiniLM-L6-v2): names in order
//!    of frequency, each joins the most similar earlier kept name when the cosine reaches
//!    the threshold;
//! 5. drop names given to fewer than `min_images` images (their images get names from
//!    their neighbours in refine).

use crate::metrics::canonical;
use crate::sentence::{cosine, SentenceEncoder};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Settings of the vocabulary steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VocabSettings {
    /// The category the images show (round 1 of labelling, e.g. `bird`); names that are
    /// only the category are dropped as generic. None: read from the answer log.
    pub category: Option<String>,
    /// Cosine of MiniLM sentence embeddings at or above which two names are synonyms.
    /// Measured: the closest two names kept apart in the cub26 runs were `Blue Grosbeak` /
    /// `Yellow Grosbeak` at 0.84, while `Grey Heron` / `Gray Heron` reach 0.98
    /// (`cargo test -p linesight-trainer --test it synonym -- --nocapture`).
    pub synonym_threshold: f32,
    /// Names given to fewer images are not classes.
    pub min_images: usize,
    /// With a vocabulary hint: an answer is snapped to the most similar listed name when
    /// their MiniLM cosine reaches this (equal keys always snap).
    pub hint_threshold: f32,
}

impl VocabSettings {
    /// Checks the numbers against their ranges, naming each `{prefix}{key}`.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::bounds::BoundError> {
        use crate::bounds::{Bound, Checker};
        Checker::new(prefix)
            .check("synonym_threshold", self.synonym_threshold, Bound::COSINE)
            .check("min_images", self.min_images, Bound::AT_LEAST_ONE)
            .check("hint_threshold", self.hint_threshold, Bound::COSINE)
            .finish()
    }
}

impl Default for VocabSettings {
    fn default() -> Self {
        VocabSettings {
            category: None,
            synonym_threshold: 0.92,
            min_images: 3,
            hint_threshold: 0.92,
        }
    }
}

/// Why a name is not a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Not a name ("unknown") or the category itself ("bird", "a small bird").
    Generic,
    /// A one-word name that is the last word of another name ("grebe" beside "horned grebe").
    Hypernym,
    /// Given to fewer than `min_images` images.
    Rare,
}

/// One class of the vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VocabClass {
    /// Display name: the most frequent written form of the class's main key.
    pub name: String,
    /// Images with at least one answer of this class.
    pub images: usize,
    /// Answers of this class.
    pub answers: usize,
    /// Keys that make up the class (the first is the main key).
    pub keys: Vec<String>,
    /// Keys merged in by sentence similarity, with their cosine to the main key.
    pub synonyms: Vec<(String, f32)>,
}

/// A name that is not a class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedName {
    pub key: String,
    pub reason: DropReason,
    pub images: usize,
}

/// The outcome of canonicalisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vocabulary {
    pub classes: Vec<VocabClass>,
    pub dropped: Vec<DroppedName>,
    /// The closest two classes that were not merged, with their cosine (tells the user how
    /// far the threshold is from merging two real classes).
    pub closest_kept_pair: Option<(String, String, f32)>,
    pub category: Option<String>,
}

/// Phrases removed from the front of a name, longest first.
const PREFIXES: &[&str] = &[
    "other ",
    "some kind of ",
    "some sort of ",
    "some type of ",
    "a kind of ",
    "a sort of ",
    "a type of ",
    "kind of ",
    "sort of ",
    "type of ",
    "probably ",
    "possibly ",
    "likely ",
    "maybe ",
    "the ",
    "an ",
    "a ",
];
/// Phrases removed from the end of a name.
const SUFFIXES: &[&str] = &[" of some sort", " of some kind", " or similar", " species"];
/// Answers that are not names.
const NOT_NAMES: &[&str] = &[
    "unknown",
    "unsure",
    "not sure",
    "none",
    "other",
    "n a",
    "na",
    "unidentified",
    "unclear",
    "cannot tell",
    "no",
];

/// A name's key: parentheses removed, [`canonical`], wrapping phrases stripped.
pub fn normalize(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut depth = 0usize;
    for ch in raw.chars() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => s.push(ch),
            _ => {}
        }
    }
    let mut key = canonical(&s);
    loop {
        let before = key.len();
        for p in PREFIXES {
            if let Some(rest) = key.strip_prefix(p) {
                key = rest.to_string();
            }
        }
        for x in SUFFIXES {
            if let Some(rest) = key.strip_suffix(x) {
                key = rest.to_string();
            }
        }
        if key.len() == before {
            return key;
        }
    }
}

/// Reads a vocabulary hint file (`label/refine --vocabulary`): one expected name per line,
/// blank lines and `#` comments skipped, repeats (same [`normalize`] key) dropped. Fails
/// when the file cannot be read or names nothing.
pub fn read_hint(path: &std::path::Path) -> Result<Vec<String>> {
    let text = fs_err::read_to_string(path).context("cannot read the vocabulary file")?;
    let mut names: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for line in text.lines() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let key = normalize(name);
        if key.is_empty() || keys.contains(&key) {
            continue;
        }
        keys.push(key);
        names.push(name.to_string());
    }
    if names.is_empty() {
        anyhow::bail!(
            "vocabulary file `{}` lists no name (one name per line, `#` starts a comment)",
            path.display()
        );
    }
    Ok(names)
}

/// One answer key snapped to a listed name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snap {
    pub key: String,
    pub listed: String,
    /// Cosine of their sentence embeddings (1 for an equal key).
    pub cosine: f32,
    /// Answers rewritten.
    pub answers: usize,
}

/// What snapping answers to a vocabulary hint did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapReport {
    /// Answers whose key is a listed name's key.
    pub exact: usize,
    /// Keys snapped to a listed name by sentence similarity.
    pub snapped: Vec<Snap>,
    /// Answers kept as new names (not close enough to any listed name).
    pub new_names: usize,
}

/// Rewrites every answer to the listed name it means: equal keys ([`normalize`]) first,
/// then the most similar listed name by MiniLM cosine when it reaches `threshold`; other
/// answers are kept as they are (new names, which still become classes when frequent).
pub fn snap_to_hint(
    answers: &mut [Vec<String>],
    hint: &[String],
    threshold: f32,
    encoder: &SentenceEncoder,
) -> Result<SnapReport> {
    let listed_keys: Vec<String> = hint.iter().map(|h| normalize(h)).collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for names in answers.iter() {
        for raw in names {
            let key = normalize(raw);
            if !key.is_empty() {
                *counts.entry(key).or_default() += 1;
            }
        }
    }
    let unlisted: Vec<&String> = counts.keys().filter(|k| !listed_keys.contains(k)).collect();
    let mut map: HashMap<String, (usize, f32)> = HashMap::new();
    for (i, k) in listed_keys.iter().enumerate() {
        map.insert(k.clone(), (i, 1.0));
    }
    let mut report = SnapReport::default();
    if !unlisted.is_empty() {
        let hint_refs: Vec<&str> = hint.iter().map(String::as_str).collect();
        let hint_emb = encoder.encode(&hint_refs)?;
        let refs: Vec<&str> = unlisted.iter().map(|k| k.as_str()).collect();
        let emb = encoder.encode(&refs)?;
        for (k, e) in unlisted.iter().zip(&emb) {
            let best = hint_emb
                .iter()
                .enumerate()
                .map(|(i, h)| (i, cosine(e, h)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, cos)) if cos >= threshold => {
                    map.insert((*k).clone(), (i, cos));
                    report.snapped.push(Snap {
                        key: (*k).clone(),
                        listed: hint[i].clone(),
                        cosine: cos,
                        answers: counts[*k],
                    });
                }
                _ => report.new_names += counts[*k],
            }
        }
    }
    for names in answers.iter_mut() {
        for raw in names.iter_mut() {
            let key = normalize(raw);
            if let Some(&(i, cos)) = map.get(&key) {
                if cos >= 1.0 {
                    report.exact += 1;
                }
                *raw = hint[i].clone();
            }
        }
    }
    report
        .snapped
        .sort_by(|a, b| b.answers.cmp(&a.answers).then(a.key.cmp(&b.key)));
    Ok(report)
}

/// The written form of a raw answer used for display: parentheses and wrapping phrases
/// removed, original case kept.
fn display_form(raw: &str) -> String {
    let cut = raw.split(['(', '[']).next().unwrap_or(raw);
    let words: Vec<&str> = cut.split_whitespace().collect();
    let mut start = 0;
    while start < words.len() && matches!(words[start].to_lowercase().as_str(), "a" | "an" | "the")
    {
        start += 1;
    }
    words[start..]
        .join(" ")
        .trim_end_matches(['.', ',', ';', ':', '!'])
        .to_string()
}

/// Builds the vocabulary from every image's answers (`answers[i]` = the raw names given
/// to image i, one per sample). `encoder` merges synonyms; None skips step 4.
pub fn build(
    answers: &[Vec<String>],
    settings: &VocabSettings,
    encoder: Option<&SentenceEncoder>,
) -> Result<Vocabulary> {
    // key -> (images, answers, written forms with counts)
    #[derive(Default)]
    struct Stat {
        images: usize,
        answers: usize,
        forms: HashMap<String, usize>,
    }
    let mut stats: BTreeMap<String, Stat> = BTreeMap::new();
    for names in answers {
        let mut seen: Vec<String> = Vec::new();
        for raw in names {
            let key = normalize(raw);
            if key.is_empty() {
                continue;
            }
            let st = stats.entry(key.clone()).or_default();
            st.answers += 1;
            *st.forms.entry(display_form(raw)).or_default() += 1;
            if !seen.contains(&key) {
                st.images += 1;
                seen.push(key);
            }
        }
    }
    let mut dropped = Vec::new();
    let category = settings.category.as_deref().map(normalize);
    let keys: Vec<String> = stats.keys().cloned().collect();
    let generic = |key: &str| -> Option<DropReason> {
        if NOT_NAMES.contains(&key) {
            return Some(DropReason::Generic);
        }
        if let Some(cat) = category.as_deref().filter(|c| !c.is_empty()) {
            let plural = format!("{cat}s");
            if key == cat || key == plural {
                return Some(DropReason::Generic);
            }
            if key.ends_with(&format!(" {cat}")) || key.ends_with(&format!(" {plural}")) {
                return Some(DropReason::Generic);
            }
        }
        if !key.contains(' ') {
            let tail = format!(" {key}");
            let longer = keys.iter().filter(|k| k.ends_with(&tail)).count();
            if longer >= 1 {
                return Some(DropReason::Hypernym);
            }
        }
        None
    };
    // Classes under construction: main key -> member keys.
    let mut kept: Vec<String> = Vec::new();
    for key in &keys {
        match generic(key) {
            Some(reason) => dropped.push(DroppedName {
                key: key.clone(),
                reason,
                images: stats[key].images,
            }),
            None => kept.push(key.clone()),
        }
    }
    // Most answered first; ties by key for determinism.
    kept.sort_by(|a, b| stats[b].answers.cmp(&stats[a].answers).then(a.cmp(b)));
    let mut members: Vec<Vec<String>> = Vec::new();
    let mut main_of: HashMap<String, usize> = HashMap::new();
    // Plurals join their singular.
    let mut rest = Vec::new();
    for key in &kept {
        let singular = key
            .strip_suffix("es")
            .filter(|s| stats.contains_key(*s) && !generic_key(&dropped, s))
            .or_else(|| {
                key.strip_suffix('s')
                    .filter(|s| stats.contains_key(*s) && !generic_key(&dropped, s))
            });
        match singular {
            Some(s) if s != key => rest.push((key.clone(), Some(s.to_string()))),
            _ => rest.push((key.clone(), None)),
        }
    }
    for (key, _) in rest.iter().filter(|(_, s)| s.is_none()) {
        main_of.insert(key.clone(), members.len());
        members.push(vec![key.clone()]);
    }
    for (key, singular) in rest.iter().filter_map(|(k, s)| s.as_ref().map(|s| (k, s))) {
        match main_of.get(singular) {
            Some(&c) => members[c].push(key.clone()),
            None => members.push(vec![key.clone()]),
        }
    }
    let mut synonyms: Vec<Vec<(String, f32)>> = vec![Vec::new(); members.len()];
    // Synonyms by sentence similarity, most answered first.
    let answers_of =
        |m: &Vec<String>| -> usize { m.iter().map(|k| stats[k].answers).sum::<usize>() };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        answers_of(&members[b])
            .cmp(&answers_of(&members[a]))
            .then(members[a][0].cmp(&members[b][0]))
    });
    let display = |key: &str| -> String {
        let forms = &stats[key].forms;
        let mixed =
            |f: &str| f.chars().any(|c| c.is_uppercase()) && f.chars().any(|c| c.is_lowercase());
        forms
            .iter()
            .max_by(|a, b| (mixed(a.0), a.1).cmp(&(mixed(b.0), b.1)).then(b.0.cmp(a.0)))
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| key.to_string())
    };
    let mut closest: Option<(String, String, f32)> = None;
    let mut groups: Vec<usize> = Vec::new(); // indices into members, kept as classes
    if let Some(enc) = encoder {
        let texts: Vec<String> = order.iter().map(|&m| display(&members[m][0])).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let emb = enc.encode(&refs)?;
        let mut kept_pos: Vec<usize> = Vec::new(); // positions in `order`
        for (pos, &m) in order.iter().enumerate() {
            let best = kept_pos
                .iter()
                .map(|&p| (p, cosine(&emb[pos], &emb[p])))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((p, cos)) if cos >= settings.synonym_threshold => {
                    let target = order[p];
                    let moved = std::mem::take(&mut members[m]);
                    synonyms[target].push((moved[0].clone(), cos));
                    members[target].extend(moved);
                }
                other => {
                    if let Some((p, cos)) = other {
                        if closest.as_ref().is_none_or(|c| cos > c.2) {
                            closest = Some((texts[p].clone(), texts[pos].clone(), cos));
                        }
                    }
                    kept_pos.push(pos);
                }
            }
        }
        groups.extend(kept_pos.iter().map(|&p| order[p]));
    } else {
        groups.extend(order.iter().copied());
    }
    let mut classes = Vec::new();
    for g in groups {
        let keys = members[g].clone();
        let images = answers
            .iter()
            .filter(|names| names.iter().any(|r| keys.contains(&normalize(r))))
            .count();
        let n_answers = keys.iter().map(|k| stats[k].answers).sum();
        if images < settings.min_images {
            dropped.extend(keys.iter().map(|k| DroppedName {
                key: k.clone(),
                reason: DropReason::Rare,
                images: stats[k].images,
            }));
            continue;
        }
        classes.push(VocabClass {
            name: display(&keys[0]),
            images,
            answers: n_answers,
            keys,
            synonyms: synonyms[g].clone(),
        });
    }
    classes.sort_by(|a, b| b.images.cmp(&a.images).then(a.name.cmp(&b.name)));
    dropped.sort_by(|a, b| b.images.cmp(&a.images).then(a.key.cmp(&b.key)));
    Ok(Vocabulary {
        classes,
        dropped,
        closest_kept_pair: closest,
        category: settings.category.clone(),
    })
}

fn generic_key(dropped: &[DroppedName], key: &str) -> bool {
    dropped.iter().any(|d| d.key == key)
}

impl Vocabulary {
    /// key -> class index.
    pub fn index(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (c, class) in self.classes.iter().enumerate() {
            for k in &class.keys {
                m.insert(k.clone(), c);
            }
        }
        m
    }

    /// Class names in class order.
    pub fn names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(lists: &[&[&str]]) -> Vec<Vec<String>> {
        lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn normalizes_surface_forms() {
        for raw in [
            "Anna's Hummingbird",
            "the Anna's Hummingbird.",
            "ANNA'S HUMMINGBIRD",
            "Annas Hummingbird (Calypte anna)",
            "some kind of Anna's hummingbird",
            "a Anna’s Hummingbird of some sort",
        ] {
            assert_eq!(normalize(raw), "annas hummingbird", "{raw}");
        }
        assert_eq!(
            display_form("the Anna's Hummingbird (Calypte anna)."),
            "Anna's Hummingbird"
        );
    }

    #[test]
    fn drops_generic_hypernyms_and_rare_merges_plurals() {
        let a = answers(&[
            &["Horned Grebe"],
            &["horned grebe"],
            &["Horned Grebe."],
            &["Western Grebe"],
            &["Western Grebe"],
            &["western grebes"],
            &["a grebe"],
            &["some kind of grebe"],
            &["a small bird"],
            &["Bird"],
            &["unknown"],
            &["Least Grebe"],
        ]);
        let s = VocabSettings {
            category: Some("bird".into()),
            ..VocabSettings::default()
        };
        let v = build(&a, &s, None).unwrap();
        let names = v.names();
        assert_eq!(names, vec!["Horned Grebe", "Western Grebe"]);
        assert_eq!(v.classes[1].keys, vec!["western grebe", "western grebes"]);
        let reason = |k: &str| v.dropped.iter().find(|d| d.key == k).map(|d| d.reason);
        assert_eq!(reason("grebe"), Some(DropReason::Hypernym));
        assert_eq!(reason("small bird"), Some(DropReason::Generic));
        assert_eq!(reason("bird"), Some(DropReason::Generic));
        assert_eq!(reason("unknown"), Some(DropReason::Generic));
        assert_eq!(reason("least grebe"), Some(DropReason::Rare));
        let idx = v.index();
        assert_eq!(idx.get(&normalize("WESTERN GREBES")), Some(&1));
    }

    #[test]
    fn a_hint_file_skips_comments_blanks_and_repeats_and_must_name_something() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("species.txt");
        std::fs::write(
            &p,
            "# parts catalogue\nHorned Grebe\n\n  horned grebe \nGrey Heron\n",
        )
        .unwrap();
        assert_eq!(read_hint(&p).unwrap(), vec!["Horned Grebe", "Grey Heron"]);
        std::fs::write(&p, "# nothing\n\n").unwrap();
        let err = read_hint(&p).unwrap_err().to_string();
        assert!(
            err.contains("lists no name") && err.contains("species.txt"),
            "{err}"
        );
        assert!(read_hint(&dir.path().join("missing.txt")).is_err());
    }
}
