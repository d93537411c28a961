use super::*;

#[test]
fn the_cost_is_derived_from_the_noise_and_never_exceeds_the_request() {
    for (l1, eps) in [(1u128, "0.5"), (20, "0.1"), (7, "1"), (100_000, "0.003"), (3, "0.333333333333333333")] {
        let eps: Amount = eps.parse().unwrap();
        let a = Additive::laplace(Sensitivity { l1, l2_sq: l1 * l1 }, eps).unwrap();
        let Release::Pure { epsilon } = a.release() else { panic!() };
        assert!(epsilon <= eps, "{l1} at {eps}: derived {epsilon}");
        // and it is the noise's ε to within rounding of the scale
        let b = a.noise.scale();
        assert!((epsilon.to_f64() - l1 as f64 / b).abs() <= 1e-12 * eps.to_f64().max(1.0), "{epsilon} vs {}", l1 as f64 / b);
    }
    for (l2, rho) in [(1u128, "0.125"), (400, "0.01"), (1 << 40, "0.5")] {
        let rho: Amount = rho.parse().unwrap();
        let a = Additive::gaussian(Sensitivity { l1: 0, l2_sq: l2 }, rho).unwrap();
        let Release::Zcdp { rho: r, .. } = a.release() else { panic!() };
        assert!(r <= rho && r.atto() + 2 >= rho.atto(), "{r} vs {rho}");
    }
}

#[test]
fn sensitivity_products_never_wrap() {
    assert!(mul(1 << 100, 1 << 30, "test").is_err());
    assert_eq!(mul(3, 4, "test"), Ok(12));
}

#[test]
fn gaussian_parts_pool_into_one_zcdp_release() {
    let rho: Amount = "0.01".parse().unwrap();
    let delta: Amount = "1e-6".parse().unwrap();
    let pooled = pool(
        vec![
            Release::Zcdp { rho, epsilon: Amount::ZERO, delta: Amount::ZERO },
            Release::Pure { epsilon: Amount::ONE },
            Release::Zcdp { rho, epsilon: Amount::ZERO, delta: Amount::ZERO },
        ],
        delta,
    );
    assert_eq!(pooled.len(), 2);
    let Release::Zcdp { rho: r, epsilon, delta: d } = pooled[1] else { panic!() };
    assert_eq!(r, rho + rho);
    assert_eq!(d, delta);
    let exact = crate::privacy::accountant::cks_epsilon(0.02, 1e-6);
    assert!(epsilon.to_f64() >= exact && epsilon.to_f64() <= exact * (1.0 + 1e-9) + 1e-15, "{epsilon} vs {exact}");
}
