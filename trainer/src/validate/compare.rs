//! The new bundle against another one on the same images: per-class recall deltas against
//! the deployed model (with Newcombe's paired interval), the images that flipped, and the
//! top-1 agreement of an int8 bundle with its f32 twin.

use super::interval::{paired_difference, wilson, Estimate, Paired};
use serde::Serialize;

/// One true class: recall of the deployed (base) and the new model on its images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDelta {
    pub name: String,
    pub support: usize,
    pub base_recall: f64,
    pub new_recall: f64,
    /// new recall - base recall, with Newcombe's paired 95 % interval.
    pub delta: Estimate,
    pub table: Paired,
}

/// Per-class deltas (largest regression first) and the overall top-1 delta. `truth`
/// indexes `classes`; `new_right[i]` / `base_right[i]`: whether each model got image `i`.
pub fn class_deltas(
    truth: &[usize],
    new_right: &[bool],
    base_right: &[bool],
    classes: &[String],
) -> (Vec<ClassDelta>, Option<Estimate>) {
    let mut tables = vec![Paired::default(); classes.len()];
    let mut all = Paired::default();
    for ((&t, &n), &b) in truth.iter().zip(new_right).zip(base_right) {
        tables[t].add(n, b);
        all.add(n, b);
    }
    let mut rows: Vec<ClassDelta> = tables
        .iter()
        .enumerate()
        .filter_map(|(c, &table)| {
            let delta = paired_difference(table)?;
            let n = table.n() as f64;
            Some(ClassDelta {
                name: classes[c].clone(),
                support: table.n(),
                base_recall: (table.both + table.only_b) as f64 / n,
                new_recall: (table.both + table.only_a) as f64 / n,
                delta,
                table,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        a.delta
            .value
            .total_cmp(&b.delta.value)
            .then(a.name.cmp(&b.name))
    });
    (rows, paired_difference(all))
}

/// The largest drop in a class's recall (base - new; negative when every class
/// improved); None without classes.
pub fn max_regression(rows: &[ClassDelta]) -> Option<f64> {
    rows.iter()
        .map(|r| r.base_recall - r.new_recall)
        .max_by(f64::total_cmp)
}

/// Images the base model got right and the new one wrong, and the other way round.
pub fn flips(new_right: &[bool], base_right: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let mut right_to_wrong = Vec::new();
    let mut wrong_to_right = Vec::new();
    for (i, (&n, &b)) in new_right.iter().zip(base_right).enumerate() {
        match (b, n) {
            (true, false) => right_to_wrong.push(i),
            (false, true) => wrong_to_right.push(i),
            _ => {}
        }
    }
    (right_to_wrong, wrong_to_right)
}

/// One class of the int8-vs-f32 agreement, as the bundle manifest's parity records it:
/// of the images the f32 twin put in this class, how many the int8 model put there too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAgreement {
    pub name: String,
    pub reference: usize,
    pub kept: usize,
    /// kept / reference with its Wilson interval; None when the twin never chose it.
    pub agreement: Option<Estimate>,
}

/// Per-class and overall top-1 agreement of `model` with `reference` (label indices into
/// the same `labels`), lowest agreement first.
pub fn agreement(
    model: &[usize],
    reference: &[usize],
    labels: &[String],
) -> (Vec<ClassAgreement>, Option<Estimate>) {
    let mut refs = vec![0usize; labels.len()];
    let mut kept = vec![0usize; labels.len()];
    for (&m, &r) in model.iter().zip(reference) {
        refs[r] += 1;
        kept[r] += usize::from(m == r);
    }
    let mut rows: Vec<ClassAgreement> = (0..labels.len())
        .filter(|&c| refs[c] > 0)
        .map(|c| ClassAgreement {
            name: labels[c].clone(),
            reference: refs[c],
            kept: kept[c],
            agreement: wilson(kept[c], refs[c]),
        })
        .collect();
    rows.sort_by(|a, b| {
        let v = |r: &ClassAgreement| r.agreement.map_or(1.0, |e| e.value);
        v(a).total_cmp(&v(b)).then(a.name.cmp(&b.name))
    });
    let same = model.iter().zip(reference).filter(|(a, b)| a == b).count();
    (rows, wilson(same, model.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_by_hand() {
        let classes = vec!["a".to_string(), "b".to_string()];
        // class a (4 images): new right on 1, base right on 3 -> delta -0.5
        //   table: both 1 (img 0), only_b 2 (img 1, 2), neither 1 (img 3)
        // class b (2 images): new right on 2, base right on 1 -> delta +0.5
        let truth = [0, 0, 0, 0, 1, 1];
        let new_right = [true, false, false, false, true, true];
        let base_right = [true, true, true, false, false, true];
        let (rows, all) = class_deltas(&truth, &new_right, &base_right, &classes);
        assert_eq!(rows[0].name, "a");
        assert_eq!((rows[0].base_recall, rows[0].new_recall), (0.75, 0.25));
        assert_eq!(rows[0].delta.value, -0.5);
        assert_eq!(
            rows[0].table,
            Paired {
                both: 1,
                only_a: 0,
                only_b: 2,
                neither: 1
            }
        );
        assert!(rows[0].delta.low < -0.5 && rows[0].delta.high > -0.5);
        assert_eq!(rows[1].delta.value, 0.5);
        // overall: new 3/6, base 4/6
        assert!((all.unwrap().value + 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(max_regression(&rows), Some(0.5));
        let (rw, wr) = flips(&new_right, &base_right);
        assert_eq!((rw, wr), (vec![1, 2], vec![4]));
    }

    #[test]
    fn agreement_by_hand() {
        let labels = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // the f32 twin says a, a, a, b, b; int8 says a, a, b, b, c
        let (rows, all) = agreement(&[0, 0, 1, 1, 2], &[0, 0, 0, 1, 1], &labels);
        assert_eq!(all.unwrap().value, 0.6);
        // b: kept 1 of 2 (0.5) before a: 2 of 3; c never chosen by the twin: no row
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].reference, rows[0].kept),
            ("b", 2, 1)
        );
        assert_eq!(
            (rows[1].name.as_str(), rows[1].reference, rows[1].kept),
            ("a", 3, 2)
        );
    }
}
