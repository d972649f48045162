//! all-MiniLM-L6-v2 sentence embeddings on the real weights (skipped without them).

use crate::weights::weights;
use candle_core::Device;
use linesight_trainer::metrics::semantic_accuracy;
use linesight_trainer::sentence::{cosine, SentenceEncoder, DIM};

fn encoder(test: &str) -> Option<SentenceEncoder> {
    let file = weights("all-MiniLM-L6-v2/model.safetensors", test)?;
    Some(
        SentenceEncoder::load(file.parent().unwrap(), &Device::Cpu).expect("load all-MiniLM-L6-v2"),
    )
}

#[test]
fn embeddings_are_unit_norm_and_384_wide() {
    let Some(enc) = encoder("embeddings_are_unit_norm_and_384_wide") else {
        return;
    };
    assert_eq!(enc.dim(), DIM);
    let texts = [
        "Northern Cardinal",
        "",
        "a small brown bird with a long curved bill",
    ];
    let v = enc.encode(&texts).unwrap();
    assert_eq!(v.len(), texts.len());
    for (t, e) in texts.iter().zip(&v) {
        assert_eq!(e.len(), DIM, "{t:?}");
        let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{t:?}: norm {norm}");
    }
    assert!(enc.encode(&[]).unwrap().is_empty());
}

#[test]
fn embedding_does_not_depend_on_the_batch() {
    let Some(enc) = encoder("embedding_does_not_depend_on_the_batch") else {
        return;
    };
    let long = "a medium sized songbird with bright red plumage, a pointed crest, a black mask \
                around a thick orange conical bill, commonly seen at feeders across the eastern \
                and central United States in every season of the year";
    let alone = enc.encode(&["Western Grebe"]).unwrap();
    let batched = enc.encode(&[long, "Western Grebe", "cardinal"]).unwrap();
    let diff = alone[0]
        .iter()
        .zip(&batched[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "max abs diff {diff}");
    // and beyond one internal batch of 64 texts
    let many: Vec<String> = (0..150)
        .map(|i| format!("bird number {i} {}", "with a long name ".repeat(i % 7)))
        .collect();
    let mut refs: Vec<&str> = many.iter().map(String::as_str).collect();
    refs.insert(97, "Western Grebe");
    let big = enc.encode(&refs).unwrap();
    let diff = alone[0]
        .iter()
        .zip(&big[97])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-5,
        "max abs diff {diff} in a batch of {}",
        refs.len()
    );
}

#[test]
fn bird_name_similarities_are_sensible() {
    let Some(enc) = encoder("bird_name_similarities_are_sensible") else {
        return;
    };
    let names = [
        "Northern Cardinal",
        "cardinal",
        "Western Grebe",
        "Anna's Hummingbird",
        "Annas hummingbird",
    ];
    let v = enc.encode(&names).unwrap();
    let (cardinal, short, grebe, anna, annas) = (&v[0], &v[1], &v[2], &v[3], &v[4]);
    let near = cosine(cardinal, short);
    let far = cosine(cardinal, grebe);
    let same = cosine(anna, annas);
    eprintln!("cos(Northern Cardinal, cardinal) = {near:.4}, cos(Northern Cardinal, Western Grebe) = {far:.4}, cos(Anna's Hummingbird, Annas hummingbird) = {same:.4}");
    assert!(near > far, "{near} <= {far}");
    assert!(same > 0.9, "{same}");
}

#[test]
fn sacc_gives_full_credit_to_exact_names_and_partial_to_near_misses() {
    let Some(enc) = encoder("sacc_gives_full_credit_to_exact_names_and_partial_to_near_misses")
    else {
        return;
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let truth = s(&["Northern Cardinal", "Western Grebe"]);
    let exact = semantic_accuracy(&enc, &truth, &truth).unwrap();
    assert!((exact - 1.0).abs() < 1e-5, "{exact}");
    let near = semantic_accuracy(&enc, &s(&["cardinal", "Western Grebe"]), &truth).unwrap();
    let swapped =
        semantic_accuracy(&enc, &s(&["Western Grebe", "Northern Cardinal"]), &truth).unwrap();
    assert!(
        near < exact && near > swapped,
        "exact {exact}, near {near}, swapped {swapped}"
    );
}

/// The vocabulary's synonym merge with the real model: spelling variants merge at the
/// default threshold, two different species of one genus stay apart.
#[test]
fn synonym_merge_joins_spellings_and_keeps_species_apart() {
    use linesight_trainer::vocab::{build, VocabSettings};
    let Some(enc) = encoder("synonym_merge_joins_spellings_and_keeps_species_apart") else {
        return;
    };
    let mut answers: Vec<Vec<String>> = Vec::new();
    for (name, n) in [
        ("Gray Heron", 6),
        ("Grey Heron", 3),
        ("Blue Grosbeak", 5),
        ("Yellow Grosbeak", 4),
        ("Red-faced Cormorant", 4),
        ("Pelagic Cormorant", 4),
    ] {
        answers.extend((0..n).map(|_| vec![name.to_string()]));
    }
    let v = build(&answers, &VocabSettings::default(), Some(&enc)).unwrap();
    let names = v.names();
    assert!(names.contains(&"Gray Heron".to_string()), "{names:?}");
    assert!(!names.contains(&"Grey Heron".to_string()), "{names:?}");
    let heron = v.classes.iter().find(|c| c.name == "Gray Heron").unwrap();
    assert_eq!(heron.images, 9);
    assert_eq!(heron.synonyms.len(), 1, "{:?}", heron.synonyms);
    eprintln!(
        "grey/gray heron cosine {:?}; closest kept pair {:?}",
        heron.synonyms, v.closest_kept_pair
    );
    for species in [
        "Blue Grosbeak",
        "Yellow Grosbeak",
        "Red-faced Cormorant",
        "Pelagic Cormorant",
    ] {
        assert!(
            names.contains(&species.to_string()),
            "{species} merged away: {names:?}"
        );
    }
}

#[test]
fn answers_snap_to_a_vocabulary_hint_by_key_or_similarity() {
    let Some(enc) = encoder("answers_snap_to_a_vocabulary_hint_by_key_or_similarity") else {
        return;
    };
    let hint: Vec<String> = ["Grey Heron", "Horned Grebe", "Pied-billed Grebe"]
        .map(String::from)
        .to_vec();
    let mut answers: Vec<Vec<String>> = vec![
        vec!["Gray Heron".into(), "the horned grebe".into()],
        vec!["other: Eastern Towhee".into()],
        vec!["Pied-billed grebe (Podilymbus podiceps)".into()],
    ];
    let r = linesight_trainer::vocab::snap_to_hint(&mut answers, &hint, 0.92, &enc).unwrap();
    assert_eq!(answers[0], vec!["Grey Heron", "Horned Grebe"]);
    assert_eq!(
        answers[1],
        vec!["other: Eastern Towhee"],
        "not close: a new name"
    );
    assert_eq!(answers[2], vec!["Pied-billed Grebe"]);
    assert_eq!(r.exact, 2);
    assert_eq!(r.snapped.len(), 1);
    assert_eq!(r.snapped[0].key, "gray heron");
    assert!(r.snapped[0].cosine >= 0.92, "{:?}", r.snapped);
    assert_eq!(r.new_names, 1);
    // `other: X` keeps X as its key.
    assert_eq!(
        linesight_trainer::vocab::normalize("Other: Eastern Towhee"),
        "eastern towhee"
    );
}
