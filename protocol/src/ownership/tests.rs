use super::*;

fn keypair(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

fn manifest(env: &str) -> Manifest {
    Manifest::from_toml(&format!(
        "name = \"web\"\nversion = \"1.0.0\"\nreplicas = 2\n[wasm]\nmodule = \"blake3:{}\"\n\
         [env]\nGREETING = \"{env}\"\n[resources]\ncpu = 0.25\n",
        "a".repeat(64)
    ))
    .unwrap()
}

fn actions() -> Vec<AppAction> {
    vec![
        AppAction::Deploy {
            app: "web".into(),
            manifest: manifest_digest(&manifest("hi")),
        },
        AppAction::Scale {
            app: "web".into(),
            replicas: 3,
        },
        AppAction::Stop { app: "web".into() },
        AppAction::SetSecret {
            app: "web".into(),
            name: "db_password".into(),
            sealed: BlobHash([7; 32]),
        },
        AppAction::RemoveSecret {
            app: "web".into(),
            name: "db_password".into(),
        },
    ]
}

#[test]
fn secret_actions_sign_their_name_and_sealed_value() {
    let key = OwnerKey::of(&keypair(1)).unwrap();
    let bytes = |action: &AppAction| SignedRequest::signed_bytes(&key, 1, action);
    let set = |name: &str, sealed: u8| AppAction::SetSecret {
        app: "web".into(),
        name: name.into(),
        sealed: BlobHash([sealed; 32]),
    };
    assert_ne!(bytes(&set("a", 1)), bytes(&set("b", 1)));
    assert_ne!(bytes(&set("a", 1)), bytes(&set("a", 2)));
    let remove = AppAction::RemoveSecret {
        app: "web".into(),
        name: "a".into(),
    };
    assert_ne!(bytes(&set("a", 1)), bytes(&remove));
    assert_eq!(remove.verb(), "secret removal");
}

#[test]
fn the_encoding_is_canonical_and_pinned() {
    let key = OwnerKey::of(&keypair(7)).unwrap();
    let scale = AppAction::Scale {
        app: "web".into(),
        replicas: 3,
    };
    let bytes = SignedRequest::signed_bytes(&key, 0x0102_0304_0506_0708, &scale);
    let mut expected = b"mycel app request v1\0".to_vec();
    expected.extend_from_slice(&key.0);
    expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expected.push(2);
    expected.extend_from_slice(&[0, 0, 0, 3]);
    expected.extend_from_slice(b"web");
    expected.extend_from_slice(&[0, 0, 0, 3]);
    assert_eq!(bytes, expected);

    let stop = SignedRequest::signed_bytes(&key, 1, &AppAction::Stop { app: "web".into() });
    assert_eq!(stop.len(), DOMAIN.len() + 32 + 8 + 1 + 4 + 3);
    assert_eq!(stop[DOMAIN.len() + 40], 3);

    // ed25519 signatures are deterministic: this pins key derivation, encoding and signing
    // together, for anyone writing a client in another language (the vector was checked against
    // Python's `cryptography` package, from the layout in `signed_bytes`' documentation).
    let signed = SignedRequest::sign(&keypair(7), 1_700_000_000_000, scale).unwrap();
    assert_eq!(
        key.to_string(),
        "ed25519:ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    );
    assert_eq!(signed.signature_hex(), PINNED_SIGNATURE);
}

const PINNED_SIGNATURE: &str = "c6c75231fb74a6672c07ed46643f115edaef304441ade15da08abb7bc665f07ce03eb92800e4ad9c6034855b01fd5676e3d6a29fb5f0a7ab6bf9e16ed7f1c805";

#[test]
fn every_action_signs_and_verifies() {
    for action in actions() {
        let signed = SignedRequest::sign(&keypair(1), 1_000, action.clone()).unwrap();
        assert_eq!(signed.key, OwnerKey::of(&keypair(1)).unwrap());
        signed.verify().unwrap();
        // As it travels over HTTP: the key's text form and the signature's hex.
        let again = SignedRequest::from_parts(
            signed.key.to_string().parse().unwrap(),
            signed.issued_at_ms,
            action,
            &signed.signature_hex(),
        )
        .unwrap();
        assert_eq!(again, signed);
        again.verify().unwrap();
    }
}

#[test]
fn any_change_breaks_the_signature() {
    let other = OwnerKey::of(&keypair(2)).unwrap();
    for action in actions() {
        let signed = SignedRequest::sign(&keypair(1), 1_000, action.clone()).unwrap();
        let mut tampered = Vec::new();
        tampered.push(SignedRequest {
            key: other,
            ..signed.clone()
        });
        tampered.push(SignedRequest {
            issued_at_ms: 1_001,
            ..signed.clone()
        });
        let mut flipped = signed.clone();
        flipped.signature[10] ^= 1;
        tampered.push(flipped);
        let mut short = signed.clone();
        short.signature.pop();
        tampered.push(short);
        for changed in [
            AppAction::Deploy {
                app: "web".into(),
                manifest: manifest_digest(&manifest("changed")),
            },
            AppAction::Deploy {
                app: "api".into(),
                manifest: manifest_digest(&manifest("hi")),
            },
            AppAction::Scale {
                app: "web".into(),
                replicas: 30,
            },
            AppAction::Scale {
                app: "api".into(),
                replicas: 3,
            },
            AppAction::Stop { app: "api".into() },
            AppAction::Stop { app: "web".into() },
        ] {
            if changed != action {
                tampered.push(SignedRequest {
                    action: changed,
                    ..signed.clone()
                });
            }
        }
        for bad in tampered {
            assert!(bad.verify().is_err(), "{bad:?} verified");
        }
    }
}

#[test]
fn a_signature_over_other_bytes_is_not_a_request() {
    // The same fields signed without the domain tag (as another protocol might sign them).
    let key = OwnerKey::of(&keypair(1)).unwrap();
    let action = AppAction::Stop { app: "web".into() };
    let bytes = SignedRequest::signed_bytes(&key, 5, &action);
    let signature = keypair(1).sign(&bytes[DOMAIN.len()..]).unwrap();
    let forged = SignedRequest {
        key,
        issued_at_ms: 5,
        action,
        signature,
    };
    assert_eq!(forged.verify(), Err(OwnershipError::BadSignature));
}

#[test]
fn keys_read_and_write_as_text_and_match_peer_ids() {
    let keypair = keypair(3);
    let key = OwnerKey::of(&keypair).unwrap();
    let text = key.to_string();
    assert!(
        text.starts_with("ed25519:") && text.len() == 8 + 64,
        "{text}"
    );
    assert_eq!(text.parse::<OwnerKey>().unwrap(), key);
    assert!(key.short().starts_with("ed25519:") && key.short().ends_with('…'));

    let peer = keypair.public().to_peer_id();
    assert_eq!(OwnerKey::from_peer_id(&peer), Some(key));
    assert_eq!(key.to_peer_id(), Some(peer));
    assert_eq!(OwnerKey::from_peer_id(&PeerId::random()), None);

    for bad in [
        "",
        "ed25519:",
        "ed25519:abc",
        &format!("ed25519:{}", "g".repeat(64)),
        &format!("rsa:{}", "a".repeat(64)),
        &format!("ed25519:{}00", "a".repeat(64)),
    ] {
        assert!(bad.parse::<OwnerKey>().is_err(), "{bad:?}");
    }
    assert_eq!(
        serde_json::to_value(key).unwrap(),
        serde_json::Value::String(text)
    );
}

#[test]
fn malformed_signatures_are_refused_before_verifying() {
    let key = OwnerKey::of(&keypair(1)).unwrap();
    let action = AppAction::Stop { app: "web".into() };
    for bad in ["", "abcd", &"z".repeat(128), &"a".repeat(126)] {
        assert_eq!(
            SignedRequest::from_parts(key, 1, action.clone(), bad),
            Err(OwnershipError::MalformedSignature)
        );
    }
}

#[test]
fn the_manifest_digest_ignores_the_documents_form() {
    let from_toml = manifest("hi");
    let json = serde_json::to_string_pretty(&from_toml).unwrap();
    let from_json = Manifest::from_json(json.as_bytes()).unwrap();
    assert_eq!(manifest_digest(&from_toml), manifest_digest(&from_json));

    // Another key order and defaults left out: the same manifest once parsed.
    let terse = format!(
        r#"{{"resources":{{"cpu":0.25}},"env":{{"GREETING":"hi"}},"wasm":{{"module":"blake3:{}"}},"replicas":2,"version":"1.0.0","name":"web"}}"#,
        "a".repeat(64)
    );
    let terse = Manifest::from_json(terse.as_bytes()).unwrap();
    assert_eq!(manifest_digest(&terse), manifest_digest(&from_toml));

    assert_ne!(
        manifest_digest(&manifest("hi")),
        manifest_digest(&manifest("ho"))
    );
    let mut scaled = manifest("hi");
    scaled.replicas = 3;
    assert_ne!(manifest_digest(&scaled), manifest_digest(&manifest("hi")));
}

#[test]
fn requests_survive_the_wire() {
    for action in actions() {
        let signed = SignedRequest::sign(&keypair(4), 9, action).unwrap();
        let frame = crate::encode(&signed).unwrap();
        let back: SignedRequest = crate::decode(&frame, 4096).unwrap();
        assert_eq!(back, signed);
        back.verify().unwrap();
    }
}

#[test]
fn freshness_is_symmetric() {
    let signed = SignedRequest::sign(&keypair(1), 10_000_000, actions().remove(2)).unwrap();
    assert!(signed.is_fresh(10_000_000));
    assert!(signed.is_fresh(10_000_000 + MAX_SKEW_MS));
    assert!(signed.is_fresh(10_000_000 - MAX_SKEW_MS));
    assert!(!signed.is_fresh(10_000_000 + MAX_SKEW_MS + 1));
    assert!(!signed.is_fresh(10_000_000 - MAX_SKEW_MS - 1));
}
