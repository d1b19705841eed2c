//! Round trips through the real Docker engine: `docker save` → import → write → `docker load`.

mod common;

use std::fs;

use common::*;
use mycel_images::{ImageRecord, import_archive, layers_held_by_engine, write_loadable_archive};

/// Makes an image with `docker import` of a rootfs holding one file unique to the test.
fn docker_import(dir: &std::path::Path, name: &str) {
    let rootfs = layer_tar(&[("hello.txt", format!("hello from {name}\n").as_bytes())]);
    let path = write_archive(dir, "rootfs.tar", &rootfs);
    docker(&["import", path.to_str().unwrap(), name]);
}

fn docker_save(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{}.tar", name.replace([':', '/'], "_")));
    docker(&["save", "-o", path.to_str().unwrap(), name]);
    path
}

/// The archive for `docker load`, from the store.
fn loadable(store: &mycel_images::BlobStore, record: &ImageRecord, held: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_loadable_archive(
        record,
        held,
        |h| store.blob_path(h).ok().flatten(),
        &mut out,
    )
    .unwrap();
    out
}

fn docker_load(dir: &std::path::Path, archive: &[u8]) -> std::process::Output {
    let path = write_archive(dir, "load.tar", archive);
    docker_output(&["load", "-i", path.to_str().unwrap()])
}

/// Loads `archive` and checks the engine then holds `name` with image id `id`.
fn load_expecting(dir: &std::path::Path, archive: &[u8], name: &str, id: &str) {
    let output = docker_load(dir, archive);
    assert!(output.status.success(), "docker load: {output:?}");
    assert_eq!(inspect(name).1, id);
}

#[tokio::test]
async fn a_docker_save_imports_and_loads_back_with_the_same_id() {
    let (dir, [name], _cleanup) = docker_test(["roundtrip"]);
    docker_import(dir.path(), &name);
    let (diff_ids, id) = inspect(&name);
    let saved = docker_save(dir.path(), &name);

    let store = open_store(dir.path());
    let imported = import_archive(&store, &saved, None).await.unwrap();
    let record = &imported.record;
    assert_eq!(record.name, name);
    assert_eq!(record.image_id(), id);
    let record_diff_ids: Vec<&str> = record.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(record_diff_ids, diff_ids);
    // `docker save` writes layers uncompressed: their digest is their diff_id.
    for layer in &record.layers {
        assert_eq!(layer.part.digest, layer.diff_id);
    }
    // The record is a blob too, and it reads back as the record.
    let json = fs::read(store.blob_path(&imported.record_hash).unwrap().unwrap()).unwrap();
    assert_eq!(
        &serde_json::from_slice::<ImageRecord>(&json).unwrap(),
        record
    );

    // Importing again stores nothing new and gives the same id.
    let hashes = store.hashes().unwrap().len();
    let again = import_archive(&store, &saved, None).await.unwrap();
    assert_eq!(again, imported);
    assert_eq!(store.hashes().unwrap().len(), hashes);

    docker(&["rmi", "-f", &name]);
    load_expecting(dir.path(), &loadable(&store, record, 0), &name, &id);
}

#[tokio::test]
async fn an_image_built_from_another_shares_its_layers_and_loads_without_them() {
    let (dir, [base, app], _cleanup) = docker_test(["base", "app"]);
    docker_import(dir.path(), &base);
    let context = dir.path().join("context");
    fs::create_dir(&context).unwrap();
    fs::write(context.join("app.txt"), format!("the app of {app}\n")).unwrap();
    fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.txt /app.txt\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "--force-rm",
        "-t",
        &app,
        context.to_str().unwrap(),
    ]);
    let (app_layers, app_id) = inspect(&app);
    let (base_layers, _) = inspect(&base);
    assert_eq!(app_layers.len(), 2);

    let store = open_store(dir.path());
    let base_saved = docker_save(dir.path(), &base);
    let app_saved = docker_save(dir.path(), &app);
    let base_record = import_archive(&store, &base_saved, None)
        .await
        .unwrap()
        .record;
    let app_record = import_archive(&store, &app_saved, None)
        .await
        .unwrap()
        .record;
    assert_eq!(app_record.layers[0], base_record.layers[0]);
    assert_ne!(app_record.layers[1], base_record.layers[0]);
    // Two images, one shared layer: 2 configs + 2 layers + 2 records.
    assert_eq!(store.hashes().unwrap().len(), 6);

    // The engine holds the base: the app's archive carries only its own layer.
    docker(&["rmi", "-f", &app]);
    let held = layers_held_by_engine(&app_record, &[base_layers]);
    assert_eq!(held, 1);
    let archive = loadable(&store, &app_record, held);
    let paths = tar_paths(&archive);
    let file_of = |digest: &str| format!("blobs/sha256/{}", hex(digest));
    assert!(
        !paths.contains(&file_of(&app_record.layers[0].part.digest)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&file_of(&app_record.layers[1].part.digest)),
        "{paths:?}"
    );
    load_expecting(dir.path(), &archive, &app, &app_id);

    // Without the base in the engine, the same archive is refused: the omission is real.
    docker(&["rmi", "-f", &app, &base]);
    let output = docker_load(dir.path(), &archive);
    assert!(!output.status.success(), "loaded without its base layer");
    load_expecting(dir.path(), &loadable(&store, &app_record, 0), &app, &app_id);
}

#[tokio::test]
async fn an_oci_archive_with_a_gzip_layer_loads_into_docker() {
    let (dir, [name], _cleanup) = docker_test(["oci"]);
    let layers = [Layer::gzipped(&[("oci.txt", name.as_bytes())])];
    let config = config_for(&layers);
    let entries = oci_entries(
        &config,
        &layers,
        serde_json::json!({"org.opencontainers.image.ref.name": name}),
    );
    let archive = write_archive(dir.path(), "oci.tar", &tar_of(&entries));
    let store = open_store(dir.path());
    let record = import_archive(&store, &archive, None).await.unwrap().record;

    load_expecting(
        dir.path(),
        &loadable(&store, &record, 0),
        &name,
        &sha256(&config),
    );
    let (diff_ids, _) = inspect(&name);
    assert_eq!(diff_ids, [layers[0].diff_id.clone()]);
}
