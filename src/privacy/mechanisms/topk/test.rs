use super::*;
use crate::privacy::mechanisms::Sensitivity;

#[test]
fn top_k_costs_the_histogram_and_larger_gaps_are_likelier_right() {
    let h = Count::laplace(Sensitivity { l1: 4, l2_sq: 4 }, "1".parse().unwrap()).unwrap();
    let t = TopK { histogram: h.clone(), k: 5, candidates: 200 };
    assert_eq!(t.releases(), h.releases());
    let (p10, p100) = (t.correct_probability(10), t.correct_probability(100));
    assert!(p100 > p10 && p100 > 0.99, "{p10} {p100}");
}
