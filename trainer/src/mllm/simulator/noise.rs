//! The simulator's noise model: which name an answer carries, and in what surface form.
//!
//! For an image of class `c`, each call draws independently (seeded per image and call):
//! - the correct name with probability `accuracy[c]`;
//! - otherwise, by the configured mix: a confusable sibling (a class of the same group;
//!   which sibling is instance-dependent: every image has its own fixed preference over its
//!   siblings, so some images are mistaken for one sibling, others for another), a coarse
//!   name ("a small bird", "a grebe"), or a plausible name outside the data set.
//!
//! Groups are the classes sharing their last word (`... Grebe`) unless a groups file says
//! otherwise. Per-class accuracy is a vector so that per-class spread and habitual partners
//! can be layered on without changing the drawing code.

use super::names;
use crate::metrics::canonical;
use crate::mllm::prompt::Context1;
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Shares of the wrong answers (normalised when drawn).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mix {
    pub sibling: f64,
    pub coarse: f64,
    pub outside: f64,
}

impl Default for Mix {
    /// 60% sibling, 20% coarse, 20% outside: the mix of DESIGN.md's reference experiment.
    fn default() -> Self {
        Mix {
            sibling: 0.6,
            coarse: 0.2,
            outside: 0.2,
        }
    }
}

/// What kind of answer was drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Correct,
    Sibling,
    Coarse,
    Outside,
}

/// The classes, their groups and the outside names of each group.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub classes: Vec<String>,
    /// Group index of each class.
    pub group_of: Vec<usize>,
    /// Group display word, e.g. `grebe`.
    pub group_words: Vec<String>,
    /// Members of each group.
    pub members: Vec<Vec<usize>>,
    /// Outside names per group.
    pub outside: Vec<Vec<String>>,
}

impl Taxonomy {
    /// Groups `classes` by their last word.
    pub fn by_last_word(classes: Vec<String>) -> Self {
        let words: Vec<String> = classes
            .iter()
            .map(|c| canonical(c).rsplit(' ').next().unwrap_or("").to_string())
            .collect();
        Self::from_assignment(classes, words)
    }

    /// Groups from a file: one group per line, `group word: Class A, Class B, ...`; `#`
    /// starts a comment. Classes the file does not name form groups by last word. Fails on
    /// an unreadable file, a line without `:`, or a class that is not in the truth.
    pub fn from_file(classes: Vec<String>, path: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(path).context("cannot read the groups file")?;
        let mut words: Vec<Option<String>> = vec![None; classes.len()];
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((group, members)) = line.split_once(':') else {
                bail!(
                    "groups file `{}` line {}: expected `group: Class A, Class B`",
                    path.display(),
                    i + 1
                );
            };
            for m in members.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let Some(ci) = classes.iter().position(|c| canonical(c) == canonical(m)) else {
                    bail!(
                        "groups file `{}` line {}: `{m}` is not a class of the truth manifest",
                        path.display(),
                        i + 1
                    );
                };
                words[ci] = Some(canonical(group));
            }
        }
        let words = classes
            .iter()
            .zip(words)
            .map(|(c, w)| {
                w.unwrap_or_else(|| canonical(c).rsplit(' ').next().unwrap_or("").to_string())
            })
            .collect();
        Ok(Self::from_assignment(classes, words))
    }

    fn from_assignment(classes: Vec<String>, words: Vec<String>) -> Self {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut group_words = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut group_of = Vec::with_capacity(classes.len());
        for (ci, w) in words.iter().enumerate() {
            let gi = *index.entry(w.clone()).or_insert_with(|| {
                group_words.push(w.clone());
                members.push(Vec::new());
                group_words.len() - 1
            });
            members[gi].push(ci);
            group_of.push(gi);
        }
        let known: Vec<String> = classes.iter().map(|c| canonical(c)).collect();
        let outside = group_words
            .iter()
            .map(|w| {
                let listed = names::OUTSIDE
                    .iter()
                    .find(|(k, _)| *k == w.as_str())
                    .map(|(_, v)| *v);
                let candidates: Vec<String> = match listed {
                    Some(list) => list.iter().map(|s| s.to_string()).collect(),
                    None => names::ADJECTIVES
                        .iter()
                        .map(|a| format!("{a} {}", title(w)))
                        .collect(),
                };
                candidates
                    .into_iter()
                    .filter(|n| !known.contains(&canonical(n)))
                    .collect()
            })
            .collect();
        Taxonomy {
            classes,
            group_of,
            group_words,
            members,
            outside,
        }
    }

    /// The other classes of `class`'s group; all other classes when it is alone.
    pub fn siblings(&self, class: usize) -> Vec<usize> {
        let own: Vec<usize> = self.members[self.group_of[class]]
            .iter()
            .copied()
            .filter(|&c| c != class)
            .collect();
        if own.is_empty() {
            (0..self.classes.len()).filter(|&c| c != class).collect()
        } else {
            own
        }
    }
}

/// The noise model: per-class accuracy and the mix of wrong answers.
#[derive(Debug, Clone)]
pub struct Noise {
    pub taxonomy: Taxonomy,
    /// Probability of the correct name, per class.
    pub accuracy: Vec<f64>,
    pub mix: Mix,
    /// What round 1 answers.
    pub context: Context1,
    /// Share of wrong answers that name the class's fixed partner (a habit: the same
    /// confusion every time, whatever the image); the rest follow `mix`.
    pub systematic: f64,
    /// Each class's fixed partner: a sibling when the class has one, else another class.
    pub partner: Vec<Option<usize>>,
}

impl Noise {
    /// The same accuracy for every class.
    pub fn uniform(taxonomy: Taxonomy, accuracy: f64, mix: Mix, context: Context1) -> Self {
        let accuracy = vec![accuracy.clamp(0.0, 1.0); taxonomy.classes.len()];
        Noise {
            taxonomy,
            accuracy,
            mix,
            context,
            systematic: 0.0,
            partner: Vec::new(),
        }
    }

    /// Habits: per-class accuracy `accuracy +- spread` (uniform, clamped to [0, 1]) and a
    /// fixed partner per class that takes `systematic` of its wrong answers. Deterministic
    /// per `seed`.
    pub fn with_habits(mut self, spread: f64, systematic: f64, seed: u64) -> Self {
        let n = self.taxonomy.classes.len();
        let base = self.accuracy.first().copied().unwrap_or(0.0);
        self.accuracy = (0..n)
            .map(|c| {
                let u = unit(splitmix(
                    seed ^ 0x5EED_5EED ^ (c as u64).wrapping_mul(0x9E37),
                ));
                (base + spread * (2.0 * u - 1.0)).clamp(0.0, 1.0)
            })
            .collect();
        self.systematic = systematic.clamp(0.0, 1.0);
        self.partner = (0..n)
            .map(|c| {
                let pool: Vec<usize> = match self.taxonomy.siblings(c) {
                    s if !s.is_empty() => s,
                    _ => (0..n).filter(|&o| o != c).collect(),
                };
                let h = splitmix(seed ^ 0xA11E ^ (c as u64).wrapping_mul(0xC2B2_AE35));
                (!pool.is_empty()).then(|| pool[(h % pool.len() as u64) as usize])
            })
            .collect();
        self
    }

    /// Draws the name one answer about an image of `class` carries. `image_pref` is the
    /// image's fixed preference seed (instance-dependent confusion); `rng` is this call's.
    pub fn draw(&self, class: usize, image_pref: u64, rng: &mut StdRng) -> (Kind, String) {
        let t = &self.taxonomy;
        if rng.random::<f64>() < self.accuracy[class] {
            return (Kind::Correct, t.classes[class].clone());
        }
        if self.systematic > 0.0 && rng.random::<f64>() < self.systematic {
            if let Some(p) = self.partner.get(class).copied().flatten() {
                return (Kind::Sibling, t.classes[p].clone());
            }
        }
        let m = self.mix;
        let total = (m.sibling + m.coarse + m.outside).max(f64::MIN_POSITIVE);
        let u = rng.random::<f64>() * total;
        let outside = &t.outside[t.group_of[class]];
        if u < m.sibling || (u >= m.sibling + m.coarse && outside.is_empty()) {
            let sibs = t.siblings(class);
            if sibs.is_empty() {
                return (Kind::Coarse, self.coarse(class, rng));
            }
            // Instance-dependent preference: weight_j = h(image, j)^4, peaked on one or two.
            let weights: Vec<f64> = sibs
                .iter()
                .map(|&s| unit(splitmix(image_pref ^ (s as u64).wrapping_mul(0x9E37_79B9))).powi(4))
                .collect();
            let sum: f64 = weights.iter().sum();
            let mut x = rng.random::<f64>() * sum;
            for (&s, w) in sibs.iter().zip(&weights) {
                if x < *w {
                    return (Kind::Sibling, t.classes[s].clone());
                }
                x -= w;
            }
            return (
                Kind::Sibling,
                t.classes[*sibs.last().unwrap_or(&class)].clone(),
            );
        }
        if u < m.sibling + m.coarse {
            return (Kind::Coarse, self.coarse(class, rng));
        }
        (
            Kind::Outside,
            outside[rng.random_range(0..outside.len())].clone(),
        )
    }

    /// How the simulated model answers when the prompt offers a list of expected names
    /// and allows "other" (a real model asked to choose): a name on the list is answered
    /// in the list's spelling; a class name the list lacks is answered as `other: <name>`
    /// half the time, else replaced by a forced guess; a vague or off-list answer (coarse,
    /// outside) becomes a forced guess too: among the listed names of the true class and
    /// its siblings (all other classes when it has none), weighted by the image's fixed
    /// preference, so the list turns some of these answers right and most of them into a
    /// listed wrong name. Habits stay: a habitual partner is a class name and
    /// is answered as it is.
    pub fn choose_from_list(
        &self,
        class: usize,
        kind: Kind,
        name: &str,
        listed: &[String],
        image_pref: u64,
        rng: &mut StdRng,
    ) -> (Kind, String) {
        let key = canonical(name);
        if let Some(l) = listed.iter().find(|l| canonical(l) == key) {
            return (kind, l.clone());
        }
        if matches!(kind, Kind::Correct | Kind::Sibling) && rng.random::<f64>() < 0.5 {
            return (kind, format!("other: {name}"));
        }
        // The pool: the true class and its siblings (all other classes when it has none).
        let pool = std::iter::once(class).chain(self.taxonomy.siblings(class));
        let group: Vec<(usize, &String)> = pool
            .filter_map(|c| {
                let ck = canonical(&self.taxonomy.classes[c]);
                listed.iter().find(|l| canonical(l) == ck).map(|l| (c, l))
            })
            .collect();
        if group.is_empty() {
            return (kind, format!("other: {name}"));
        }
        let weights: Vec<f64> = group
            .iter()
            .map(|&(c, _)| {
                unit(splitmix(image_pref ^ (c as u64).wrapping_mul(0x9E37_79B9))).powi(4)
            })
            .collect();
        let mut x = rng.random::<f64>() * weights.iter().sum::<f64>();
        let mut pick = group[group.len() - 1];
        for (g, w) in group.iter().zip(&weights) {
            if x < *w {
                pick = *g;
                break;
            }
            x -= w;
        }
        let kind = if pick.0 == class {
            Kind::Correct
        } else {
            Kind::Sibling
        };
        (kind, pick.1.clone())
    }

    fn coarse(&self, class: usize, rng: &mut StdRng) -> String {
        let group = &self.taxonomy.group_words[self.taxonomy.group_of[class]];
        let pattern = names::COARSE[rng.random_range(0..names::COARSE.len())];
        pattern
            .replace("{category}", &self.context.category)
            .replace("{group}", group)
    }
}

/// An answer's text and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Surface {
    pub content: String,
    /// Send the content as an array of content parts instead of a string.
    pub as_parts: bool,
    /// A reasoning field beside the answer.
    pub reasoning: Option<String>,
}

/// Puts a name into one of the forms real models answer in: case, punctuation, articles,
/// scientific names, JSON with or without fences, prose around it, plain text; sometimes
/// with a reasoning field (which may mention another name) or as content parts.
pub fn surface(name: &str, distractor: &str, category: &str, rng: &mut StdRng) -> Surface {
    let sci = names::SCIENTIFIC
        .iter()
        .find(|(c, _)| *c == canonical(name))
        .map(|(_, s)| *s);
    let form = match rng.random_range(0..100) {
        0..45 => name.to_string(),
        45..60 => name.to_lowercase(),
        60..65 => name.to_uppercase(),
        65..75 => format!("{name}."),
        75..85 => match sci {
            Some(s) => format!("{name} ({s})"),
            None => name.to_string(),
        },
        85..95 => format!("the {name}"),
        _ => name.replace('\'', ""),
    };
    let json_name = serde_json::to_string(&form).unwrap_or_else(|_| format!("\"{form}\""));
    let content = match rng.random_range(0..100) {
        0..35 => format!("{{\"name\": {json_name}}}"),
        35..55 => format!("Here is my answer:\n```json\n{{\"name\": {json_name}}}\n```"),
        55..65 => format!(
            "{{\"name\": {json_name}, \"confidence\": {:.2}}}",
            rng.random_range(0.3..0.99)
        ),
        65..80 => format!(
            "The {category} in this image is most likely a {}.",
            form.trim_end_matches('.')
        ),
        80..90 => form.clone(),
        _ => format!("Based on the plumage and the bill, my answer is {{\"name\": {json_name}}}."),
    };
    let reasoning = (rng.random_range(0..100) < 15).then(|| {
        format!("The image shows a {category}. It could be a {distractor}, but the markings fit better with {name}.")
    });
    Surface {
        content,
        as_parts: rng.random_range(0..100) < 20,
        reasoning,
    }
}

/// The round-1 answer: category, expert and granularity in JSON, sometimes fenced.
///
/// With `variety` V > 0, a share V of the answers is reworded, as a real model words the
/// same idea differently from image to image: the expert becomes `{category} expert` or
/// `{category} specialist` instead of the configured one, and one in three of these also
/// says `small {category}`. A handful of round-1 answers then often splits evenly between
/// two wordings (issue 16 saw "bird / bird expert" against "bird / ornithologist"), which
/// is what a vote that depended on the order of arrival got wrong. With V = 0 (the default)
/// the draws are the ones the simulator always made.
pub fn context_answer(ctx: &Context1, variety: f64, rng: &mut StdRng) -> String {
    let mut category = match rng.random_range(0..100) {
        0..80 => ctx.category.clone(),
        80..90 => title(&ctx.category),
        _ => format!("small {}", ctx.category),
    };
    let mut expert = ctx.expert.clone();
    if variety > 0.0 && rng.random::<f64>() < variety {
        expert = match rng.random_range(0..2) {
            0 => format!("{} expert", ctx.category),
            _ => format!("{} specialist", ctx.category),
        };
        if rng.random_range(0..3) == 0 {
            category = format!("small {}", ctx.category);
        }
    }
    let json =
        serde_json::json!({"category": category, "expert": expert, "granularity": ctx.granularity})
            .to_string();
    if rng.random_range(0..100) < 40 {
        format!("```json\n{json}\n```")
    } else {
        json
    }
}

/// Malformed answers real servers produce now and then: (content, refusal field, finish reason).
pub fn malformed(name: &str, rng: &mut StdRng) -> (Option<String>, Option<String>, &'static str) {
    match rng.random_range(0..6) {
        0 => {
            let full = format!("{{\"name\": \"{name}\"}}");
            let cut = full.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|&i| full.is_char_boundary(i))
                .unwrap_or(0);
            (Some(full[..cut].to_string()), None, "length")
        }
        1 => (Some(String::new()), None, "stop"),
        2 => (
            Some("I'm sorry, but I can't help with identifying this image.".into()),
            None,
            "stop",
        ),
        3 => (
            None,
            Some("I can't assist with that request.".into()),
            "stop",
        ),
        4 => (
            Some("{\"confidence\": 0.2, \"note\": \"unclear\", \"view\": \"blurry\"}".into()),
            None,
            "stop",
        ),
        _ => (Some("<think>The wing bars suggest".into()), None, "length"),
    }
}

/// A 64-bit mix (splitmix64 finaliser).
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A u64 to (0, 1].
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

fn title(w: &str) -> String {
    w.split(' ')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod habit_tests {
    use super::*;
    use rand::SeedableRng;

    fn noise(spread: f64, systematic: f64, seed: u64) -> Noise {
        let classes: Vec<String> = [
            "Horned Grebe",
            "Eared Grebe",
            "Western Grebe",
            "Cedar Waxwing",
            "Bohemian Waxwing",
            "Indigo Bunting",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ctx = Context1 {
            category: "bird".into(),
            expert: "ornithologist".into(),
            granularity: "species".into(),
        };
        Noise::uniform(Taxonomy::by_last_word(classes), 0.6, Mix::default(), ctx)
            .with_habits(spread, systematic, seed)
    }

    #[test]
    fn a_habit_sends_every_systematic_mistake_to_one_partner() {
        let n = noise(0.0, 1.0, 3);
        let mut rng = StdRng::seed_from_u64(1);
        for class in 0..6 {
            let partner = n.partner[class].expect("a partner");
            assert_ne!(partner, class);
            let mut wrong = std::collections::BTreeSet::new();
            for i in 0..400u64 {
                let (kind, name) = n.draw(class, i, &mut rng);
                if kind != Kind::Correct {
                    wrong.insert(name);
                }
            }
            assert_eq!(wrong.len(), 1, "class {class}: {wrong:?}");
            assert!(wrong.contains(&n.taxonomy.classes[partner]));
        }
        // Grebes confuse grebes: the partner is a sibling when there is one.
        assert!(n.taxonomy.classes[n.partner[0].unwrap()].ends_with("Grebe"));
    }

    #[test]
    fn spread_varies_per_class_accuracy_deterministically() {
        let a = noise(0.15, 0.5, 7);
        let b = noise(0.15, 0.5, 7);
        let c = noise(0.15, 0.5, 8);
        assert_eq!(a.accuracy, b.accuracy);
        assert_ne!(a.accuracy, c.accuracy);
        assert!(
            a.accuracy.iter().all(|&p| (0.45..=0.75).contains(&p)),
            "{:?}",
            a.accuracy
        );
        assert!(a.accuracy.iter().any(|&p| (p - 0.6).abs() > 0.01));
        assert_eq!(noise(0.0, 0.0, 1).accuracy, vec![0.6; 6]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cub_like() -> Taxonomy {
        Taxonomy::by_last_word(
            [
                "Eared Grebe",
                "Horned Grebe",
                "Western Grebe",
                "Pied-billed Grebe",
                "Cedar Waxwing",
                "Bohemian Waxwing",
                "Belted Kingfisher",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
    }

    fn ctx() -> Context1 {
        Context1 {
            category: "bird".into(),
            expert: "ornithologist".into(),
            granularity: "species".into(),
        }
    }

    #[test]
    fn groups_by_last_word_and_outside_names_avoid_classes() {
        let t = cub_like();
        assert_eq!(t.siblings(0), vec![1, 2, 3]);
        assert_eq!(
            t.siblings(6).len(),
            6,
            "a lone class is confused with any other"
        );
        assert!(t.outside[t.group_of[0]]
            .iter()
            .all(|n| !n.contains("Eared")));
        assert!(t.outside[t.group_of[6]].contains(&"Ringed Kingfisher".to_string()));
    }

    #[test]
    fn accuracy_and_mix_are_what_was_configured() {
        let noise = Noise::uniform(cub_like(), 0.6, Mix::default(), ctx());
        let mut rng = StdRng::seed_from_u64(7);
        let n = 20_000;
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let (k, _) = noise.draw(i % 4, splitmix(i as u64), &mut rng);
            *counts.entry(format!("{k:?}")).or_insert(0usize) += 1;
        }
        let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
        // 4 standard errors of a share of 20,000 draws is below 0.015.
        assert!((share("Correct") - 0.6).abs() < 0.015, "{counts:?}");
        assert!((share("Sibling") - 0.4 * 0.6).abs() < 0.015, "{counts:?}");
        assert!((share("Coarse") - 0.4 * 0.2).abs() < 0.015, "{counts:?}");
        assert!((share("Outside") - 0.4 * 0.2).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn sibling_confusion_depends_on_the_image() {
        let noise = Noise::uniform(
            cub_like(),
            0.0,
            Mix {
                sibling: 1.0,
                coarse: 0.0,
                outside: 0.0,
            },
            ctx(),
        );
        let favourite = |pref: u64| {
            let mut rng = StdRng::seed_from_u64(pref);
            let mut c: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..400 {
                *c.entry(noise.draw(0, pref, &mut rng).1).or_default() += 1;
            }
            c.into_iter().max_by_key(|(_, n)| *n).unwrap()
        };
        let favs: Vec<(String, usize)> = (0..12u64).map(|i| favourite(splitmix(i))).collect();
        assert!(
            favs.iter().all(|(_, n)| *n > 400 / 3),
            "each image prefers one sibling: {favs:?}"
        );
        let distinct: std::collections::BTreeSet<&String> = favs.iter().map(|(k, _)| k).collect();
        assert!(
            distinct.len() > 1,
            "different images prefer different siblings: {favs:?}"
        );
    }

    #[test]
    fn surfaces_vary_and_keep_the_name() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let s = surface("Anna's Hummingbird", "Rufous Hummingbird", "bird", &mut rng);
            assert!(canonical(&s.content).contains("anna"), "{s:?}");
            seen.insert(s.content);
        }
        assert!(seen.len() > 10);
    }
}
