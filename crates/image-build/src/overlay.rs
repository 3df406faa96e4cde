//! overlayfs mounts: a stack of read-only lower directories plus a writable upper directory
//! whose contents become a layer.

use std::path::{Path, PathBuf};

use crate::{BuildError, Result};

/// A mounted overlay, unmounted on drop.
pub struct Overlay {
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mount `lowers` (topmost first) with `upper`/`work` at `merged`. With no lowers, an
    /// empty directory next to `work` serves as the only lower.
    pub fn mount(lowers: &[PathBuf], upper: &Path, work: &Path, merged: &Path) -> Result<Overlay> {
        for d in [upper, work, merged] {
            std::fs::create_dir_all(d).map_err(|e| BuildError::io(d, e))?;
        }
        let mut lowers: Vec<PathBuf> = lowers.to_vec();
        if lowers.is_empty() {
            let empty = work.with_extension("empty");
            std::fs::create_dir_all(&empty).map_err(|e| BuildError::io(&empty, e))?;
            lowers.push(empty);
        }
        for l in &lowers {
            let s = l.to_string_lossy();
            if s.contains(':') || s.contains(',') {
                return Err(BuildError::Sandbox(format!(
                    "overlay path {s:?} contains ':' or ','"
                )));
            }
        }
        let lowerdir = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off",
            upper.display(),
            work.display()
        );
        let cdata = std::ffi::CString::new(data.clone())
            .map_err(|_| BuildError::Sandbox("overlay options contain NUL".into()))?;
        rustix::mount::mount(
            "overlay",
            merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            Some(cdata.as_c_str()),
        )
        .map_err(|e| {
            BuildError::Sandbox(format!(
                "mounting overlay at {}: {e} (options {data})",
                merged.display()
            ))
        })?;
        Ok(Overlay {
            merged: merged.to_path_buf(),
            mounted: true,
        })
    }

    /// Where the merged view is.
    pub fn path(&self) -> &Path {
        &self.merged
    }

    /// Unmount now, reporting errors.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::empty())
            .map_err(|e| BuildError::Sandbox(format!("unmounting {}: {e}", self.merged.display())))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
