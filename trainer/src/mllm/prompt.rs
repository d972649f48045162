//! Prompts: versioned template files, the round-1 context (category, expert, granularity)
//! and the rendered text whose sha256 goes into every cache key.
//!
//! Templates are plain text with the placeholders `{category}`, `{expert}` and
//! `{granularity}`; any other brace (such as the JSON answer form) is left as it is.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Version of the prompts embedded in the binary (`trainer/prompts/v1/`).
pub const EMBEDDED_VERSION: &str = "v1";
const V1_CATEGORY: &str = include_str!("../../prompts/v1/category.txt");
const V1_NAMING: &str = include_str!("../../prompts/v1/naming.txt");

/// A prompt template and where it came from.
#[derive(Debug, Clone)]
pub struct Template {
    /// `embedded:v1/naming.txt` or the file path given.
    pub source: String,
    pub text: String,
}

impl Template {
    /// The embedded round-1 question (category, expert, granularity).
    pub fn embedded_category() -> Self {
        Template {
            source: format!("embedded:{EMBEDDED_VERSION}/category.txt"),
            text: V1_CATEGORY.to_string(),
        }
    }

    /// The embedded round-2 naming question.
    pub fn embedded_naming() -> Self {
        Template {
            source: format!("embedded:{EMBEDDED_VERSION}/naming.txt"),
            text: V1_NAMING.to_string(),
        }
    }

    /// Reads a template file. Fails when the file cannot be read or is empty.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).context("cannot read prompt file")?;
        if text.trim().is_empty() {
            anyhow::bail!("prompt file `{}` is empty", path.display());
        }
        Ok(Template {
            source: path.display().to_string(),
            text,
        })
    }

    /// `path` if given, else the embedded default made by `default`.
    pub fn file_or(path: Option<&PathBuf>, default: fn() -> Self) -> Result<Self> {
        match path {
            Some(p) => Self::from_file(p),
            None => Ok(default()),
        }
    }

    /// The sha256 of the template text itself (recorded in the report).
    pub fn sha256(&self) -> String {
        sha256_hex(self.text.as_bytes())
    }

    /// Fills the placeholders from `ctx`.
    pub fn render(&self, ctx: &Context1) -> Rendered {
        let text = self
            .text
            .replace("{category}", &ctx.category)
            .replace("{expert}", &ctx.expert)
            .replace("{granularity}", &ctx.granularity);
        Rendered::new(text)
    }
}

/// The result of round 1: what the images show and who names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context1 {
    /// General category, e.g. `bird`.
    pub category: String,
    /// The expert who tells its types apart, e.g. `ornithologist`.
    pub expert: String,
    /// What the expert names, e.g. `species`.
    pub granularity: String,
}

/// A prompt as sent, with the hash that keys the cache.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub sha256: String,
}

impl Rendered {
    pub fn new(text: String) -> Self {
        let sha256 = sha256_hex(text.as_bytes());
        Rendered { text, sha256 }
    }
}

/// The line that introduces the expected names a naming prompt offers (`label
/// --vocabulary`), one `- Name` line each after it.
pub const EXPECTED_NAMES_MARKER: &str = "Expected names";

/// The naming prompt with a list of expected names offered and "other" allowed.
pub fn offer_names(prompt: &Rendered, names: &[String]) -> Rendered {
    let mut text = prompt.text.trim_end().to_string();
    text.push_str(&format!(
        "\n\n{EXPECTED_NAMES_MARKER} (answer with one of them, spelled as listed, when it fits; \
         when none fits, answer {{\"name\": \"other: <the most specific name>\"}}):\n"
    ));
    for n in names {
        text.push_str("- ");
        text.push_str(n);
        text.push('\n');
    }
    Rendered::new(text)
}

/// The expected names a prompt offers: the `- Name` lines after the line that starts
/// with [`EXPECTED_NAMES_MARKER`]. Empty when it offers none.
pub fn expected_names(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    if !lines.any(|l| l.trim_start().starts_with(EXPECTED_NAMES_MARKER)) {
        return Vec::new();
    }
    lines
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .map_while(|l| l.strip_prefix("- "))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Picks the round-1 context by majority over the answers (compared in canonical form).
/// The expert and granularity are the most frequent among the answers that gave the
/// winning category. A tie goes to the alphabetically first canonical form, so the result
/// is a function of the answers alone, whatever order they are given in (answers arrive
/// in whatever order the server finishes them; a resumed run reads them from the log in
/// another). `None` when no answer had a category.
pub fn vote(answers: &[Context1]) -> Option<Context1> {
    let canon = crate::metrics::canonical;
    let winner = majority(
        answers
            .iter()
            .map(|a| canon(&a.category))
            .filter(|c| !c.is_empty()),
    )?;
    let agreeing: Vec<&Context1> = answers
        .iter()
        .filter(|a| canon(&a.category) == winner)
        .collect();
    let expert = majority(
        agreeing
            .iter()
            .map(|a| canon(&a.expert))
            .filter(|c| !c.is_empty()),
    );
    let granularity = majority(
        agreeing
            .iter()
            .map(|a| canon(&a.granularity))
            .filter(|c| !c.is_empty()),
    );
    Some(Context1 {
        category: winner,
        expert: expert.unwrap_or_else(|| "expert".to_string()),
        granularity: granularity.unwrap_or_else(|| "type".to_string()),
    })
}

/// The most frequent item; a tie goes to the smallest (so the order of the items does not
/// matter).
fn majority(items: impl Iterator<Item = String>) -> Option<String> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for it in items {
        *counts.entry(it).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    // BTreeMap iterates in ascending order: the first with the top count is the smallest.
    counts.into_iter().find(|(_, n)| *n == best).map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cat: &str, ex: &str, gr: &str) -> Context1 {
        Context1 {
            category: cat.into(),
            expert: ex.into(),
            granularity: gr.into(),
        }
    }

    #[test]
    fn render_fills_placeholders_and_keeps_json_braces() {
        let r = Template::embedded_naming().render(&c("bird", "ornithologist", "species"));
        assert!(r.text.contains("expert ornithologist"));
        assert!(r.text.contains("shows a bird"));
        assert!(r.text.contains("{\"name\""));
        assert!(!r.text.contains("{category}"));
        assert_eq!(r.sha256.len(), 64);
    }

    #[test]
    fn offered_names_read_back_and_change_the_prompt_hash() {
        let r = Template::embedded_naming().render(&c("bird", "ornithologist", "species"));
        assert!(expected_names(&r.text).is_empty());
        let names = vec!["Horned Grebe".to_string(), "Grey Heron".to_string()];
        let offered = offer_names(&r, &names);
        assert_ne!(offered.sha256, r.sha256);
        assert!(offered.text.contains("other: "));
        assert_eq!(expected_names(&offered.text), names);
    }

    #[test]
    fn embedded_category_prompt_asks_for_the_expert_key() {
        assert!(Template::embedded_category().text.contains("\"expert\""));
    }

    #[test]
    fn vote_takes_the_majority_category_case_insensitively() {
        let v = vote(&[
            c("Bird", "ornithologist", "species"),
            c("car", "mechanic", "model"),
            c("bird.", "Ornithologist", "species"),
            c("small bird", "birder", "species"),
        ])
        .unwrap();
        assert_eq!(v, c("bird", "ornithologist", "species"));
        assert!(vote(&[]).is_none());
    }

    /// Issue 16: the same five answers gave "bird / bird expert" in one run and another
    /// context in the next, because ties went to whichever answer arrived first.
    #[test]
    fn the_vote_does_not_depend_on_the_order_of_the_answers() {
        let answers = [
            c("bird", "ornithologist", "species"),
            c("songbird", "ornithologist", "species"),
            c("bird", "bird expert", "species"),
            c("songbird", "ornithologist", "species"),
            c("passerine", "birder", "species"),
        ];
        let first = vote(&answers).unwrap();
        // Every order of the five answers (5! = 120).
        let mut idx: Vec<usize> = (0..answers.len()).collect();
        let mut seen = 0;
        permute(&mut idx, 0, &mut |p| {
            let shuffled: Vec<Context1> = p.iter().map(|&i| answers[i].clone()).collect();
            assert_eq!(vote(&shuffled).unwrap(), first, "order {p:?}");
            seen += 1;
        });
        assert_eq!(seen, 120);
        // bird and songbird tie 2-2: the alphabetically first wins; its experts tie 1-1.
        assert_eq!(first, c("bird", "bird expert", "species"));
    }

    fn permute(v: &mut Vec<usize>, at: usize, f: &mut dyn FnMut(&[usize])) {
        if at == v.len() {
            return f(v);
        }
        for i in at..v.len() {
            v.swap(at, i);
            permute(v, at + 1, f);
            v.swap(at, i);
        }
    }
}
