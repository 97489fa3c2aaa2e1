//! Embeds the shipped templates (`templates/<locale>/<event>.<part>.hbs`) into the binary, so postdesk runs
//! from a bare binary; `outbound.templates_dir` overrides them file by file at run time.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    if let Ok(locales) = std::fs::read_dir(&root) {
        for locale in locales.flatten() {
            println!("cargo:rerun-if-changed={}", locale.path().display());
            let Ok(files) = std::fs::read_dir(locale.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "hbs") {
                    let name = format!(
                        "{}/{}",
                        locale.file_name().to_string_lossy(),
                        file.file_name().to_string_lossy()
                    );
                    entries.push((name, path));
                }
            }
        }
    }
    entries.sort();
    let mut out = String::from("/// Shipped templates: (`<locale>/<file>`, contents).\npub static EMBEDDED: &[(&str, &str)] = &[\n");
    for (name, path) in entries {
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("templates.rs"), out).expect("write templates.rs");

    // The demo's sample mails (examples/mail/*.eml), in name order.
    let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join("mail");
    println!("cargo:rerun-if-changed={}", samples.display());
    let mut mails: Vec<_> = std::fs::read_dir(&samples)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect()
        })
        .unwrap_or_default();
    mails.sort();
    let mut out = String::from("/// Sample customer mails for `postdesk demo`: (file name, bytes).\npub static SAMPLE_MAILS: &[(&str, &[u8])] = &[\n");
    for path in mails {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    out.push_str("];\n");
    std::fs::write(Path::new(&out_dir).join("samples.rs"), out).expect("write samples.rs");
}
