//! The merged file view of an image, from its layers' TOCs only: later layers win, and
//! whiteouts (`.wh.NAME`, `.wh..wh..opq`) hide what lower layers had.

use std::collections::BTreeMap;

use oci_core::Digest;

/// One compressed piece of a file: where it is in the layer blob and what it inflates to.
pub type Chunk = estargz::ChunkRange;

/// Kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Device or fifo.
    Other,
}

/// A file of the merged view.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Path without a leading `/` or `./`.
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (RFC 3339).
    pub modtime: String,
    /// Link target.
    pub link: Option<String>,
    /// The layer it comes from (index in the manifest).
    pub layer: usize,
    /// Its chunks, in order.
    pub chunks: Vec<Chunk>,
    /// sha256 of the whole file.
    pub digest: Option<Digest>,
}

/// Normalize a TOC or user path: no leading `/` or `./`, no trailing `/`.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The merged view: apply each layer's entries in order.
pub fn merge(layers: Vec<Vec<FileEntry>>) -> BTreeMap<String, FileEntry> {
    let mut view: BTreeMap<String, FileEntry> = BTreeMap::new();
    for entries in layers {
        let mut added: Vec<FileEntry> = Vec::new();
        for e in entries {
            let (dir, base) = match e.path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), e.path.clone()),
            };
            if base == ".wh..wh..opq" {
                // Opaque: nothing from lower layers below this directory survives.
                if dir.is_empty() {
                    view.clear();
                } else {
                    let prefix = format!("{dir}/");
                    view.retain(|k, _| !k.starts_with(&prefix));
                }
            } else if let Some(hidden) = base.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                let prefix = format!("{target}/");
                view.retain(|k, _| k != &target && !k.starts_with(&prefix));
            } else {
                added.push(e);
            }
        }
        for e in added {
            if e.kind != Kind::Dir {
                // A non-directory replaces whatever tree was there.
                let prefix = format!("{}/", e.path);
                view.retain(|k, _| !k.starts_with(&prefix));
            }
            view.insert(e.path.clone(), e);
        }
    }
    view
}

/// Select entries for a user pattern: `.` or `/` (everything), `dir/` (a directory and all
/// below it), a path, or a glob (`*`, `?`, `[...]`, per path component).
pub fn select<'a>(view: &'a BTreeMap<String, FileEntry>, pattern: &str) -> Vec<&'a FileEntry> {
    let p = clean(pattern);
    if p.is_empty() {
        return view.values().collect();
    }
    if go_filepath::has_wildcards(&p) {
        return view
            .values()
            .filter(|e| {
                go_filepath::glob_match(&p, &e.path).unwrap_or(false) || under_match(&p, &e.path)
            })
            .collect();
    }
    let prefix = format!("{p}/");
    view.values()
        .filter(|e| e.path == p || e.path.starts_with(&prefix))
        .collect()
}

/// Whether `path` is below something the glob matches (`bin/*` selects `bin/x/y`).
fn under_match(pattern: &str, path: &str) -> bool {
    let mut acc = String::new();
    for part in path.split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        if acc.len() < path.len() && go_filepath::glob_match(pattern, &acc).unwrap_or(false) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, layer: usize) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: if path.ends_with("dir") {
                Kind::Dir
            } else {
                Kind::File
            },
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            modtime: String::new(),
            link: None,
            layer,
            chunks: vec![],
            digest: None,
        }
    }

    #[test]
    fn later_layers_win_and_whiteouts_hide() {
        let view = merge(vec![
            vec![
                f("a", 0),
                f("b", 0),
                f("dir", 0),
                f("dir/x", 0),
                f("odir", 0),
                f("odir/old", 0),
            ],
            vec![
                f("a", 1),
                f(".wh.b", 1),
                f("dir/.wh.x", 1),
                f("odir/.wh..wh..opq", 1),
                f("odir/new", 1),
            ],
        ]);
        assert_eq!(view["a"].layer, 1);
        assert!(!view.contains_key("b"));
        assert!(!view.contains_key("dir/x") && view.contains_key("dir"));
        assert!(!view.contains_key("odir/old") && view.contains_key("odir/new"));
        assert_eq!(select(&view, "/").len(), view.len());
        assert_eq!(
            select(&view, "odir/").len(),
            2,
            "the directory and what is in it"
        );
        assert_eq!(select(&view, "a").len(), 1);
        assert_eq!(select(&view, "o*").len(), 2);
        assert_eq!(clean("./usr//bin/../lib/"), "usr/lib");
    }
}
