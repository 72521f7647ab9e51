//! derain-core's model loading checked against the graph writer's fixtures (they live in
//! derain-tools, which derain-core does not depend on, so these tests live here).

use derain_core::model::{Dim, Model, ModelError};
use derain_tools::onnx::fixtures::{self, FixtureIo};

fn load(io: FixtureIo) -> Result<Model, ModelError> {
    Model::from_bytes(fixtures::custom_io(io), "test.onnx")
}

fn message(io: FixtureIo) -> String {
    load(io).expect_err("must be rejected").to_string()
}

#[test]
fn valid_model_reads_its_card() {
    let m = Model::from_bytes(fixtures::identity(8), "id.onnx").expect("valid");
    assert_eq!(m.multiple_of(), 8);
    assert_eq!(m.card().name, "identity");
    assert!(m.has_card());
    assert_eq!(m.sha256().len(), 64);
    assert_eq!(m.input_dims()[1], Dim::Fixed(3));
    assert!(m.check_frame_size(641, 359).is_ok());
    assert!(m.check_frame_size(0, 10).is_err());
}

#[test]
fn each_contract_violation_is_named() {
    let m = message(FixtureIo {
        input_name: "images".into(),
        ..FixtureIo::default()
    });
    assert!(
        m.contains("test.onnx") && m.contains("'images'") && m.contains("'rainy'"),
        "{m}"
    );
    let m = message(FixtureIo {
        output_name: "output".into(),
        ..FixtureIo::default()
    });
    assert!(m.contains("output") && m.contains("'clean'"), "{m}");
    let m = message(FixtureIo {
        input_rank: 5,
        ..FixtureIo::default()
    });
    assert!(m.contains("rank 5"), "{m}");
    let m = message(FixtureIo {
        elem_type: 11, // float64
        ..FixtureIo::default()
    });
    assert!(
        m.contains("float64") && m.contains("expected float32"),
        "{m}"
    );
    let m = message(FixtureIo {
        channels: 4,
        ..FixtureIo::default()
    });
    assert!(m.contains("4 channels"), "{m}");
}

#[test]
fn cards_missing_malformed_or_out_of_range() {
    let m = load(FixtureIo {
        card: None,
        ..FixtureIo::default()
    })
    .expect("a model without a card still loads");
    assert!(!m.has_card());
    assert_eq!(m.multiple_of(), 1);
    assert_eq!(m.card().name, "test");

    let e = message(FixtureIo {
        card: Some("{\"name\": 3".into()),
        ..FixtureIo::default()
    });
    assert!(e.contains("malformed model card"), "{e}");
    let e = message(FixtureIo {
        card: Some(r#"{"name":"x","multiple_of":0}"#.into()),
        ..FixtureIo::default()
    });
    assert!(e.contains("multiple_of is 0"), "{e}");
    for frames in [0, 3] {
        let e = message(FixtureIo {
            card: Some(format!(r#"{{"name":"x","frames":{frames}}}"#)),
            ..FixtureIo::default()
        });
        assert!(
            e.contains(&format!("asks for {frames} consecutive frames")),
            "{e}"
        );
    }
    let m = load(FixtureIo {
        card: Some(r#"{"name":"x","frames":1}"#.into()),
        ..FixtureIo::default()
    })
    .expect("frames 1 is a single-frame model");
    assert_eq!(m.card().frames, 1);
    // A single-frame card is written as before, without the key.
    assert!(
        !m.card().to_json().contains("frames"),
        "{}",
        m.card().to_json()
    );
}

#[test]
fn files_that_are_not_models() {
    let e = Model::from_bytes(Vec::new(), "empty.onnx").expect_err("empty");
    assert!(matches!(e, ModelError::Empty { .. }), "{e}");
    let e = Model::from_bytes(vec![0xff; 64], "junk.onnx").expect_err("junk");
    assert!(e.to_string().contains("not a valid ONNX file"), "{e}");
    let truncated = fixtures::identity(1);
    let e = Model::from_bytes(truncated[..truncated.len() / 2].to_vec(), "half.onnx")
        .expect_err("truncated");
    assert!(e.to_string().contains("half.onnx"), "{e}");
    let e = Model::from_path("/no/such/file.onnx").expect_err("missing");
    assert!(e.to_string().contains("/no/such/file.onnx"), "{e}");
}
