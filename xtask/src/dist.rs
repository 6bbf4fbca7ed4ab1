//! `cargo xtask dist` and `cargo xtask image`: pkttrace as users install it,
//! made from the release build. The .deb comes from cargo-deb (its contents
//! are listed in tracer/Cargo.toml), the tarball holds the same files, and the
//! image is assembled offline from files already on this machine.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cmd::{cmd, read, run};
use crate::setup::{TempDir, docker_import};
use crate::{cargo, man, pkttrace_cli, target_dir};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const IMAGE: &str = "pkttrace";

/// `docker run`'s flags for pkttrace to see the host as an installed binary
/// does; docs/install.md says why each is needed. Not `--privileged`: Docker
/// then asks for every capability it knows, and where root lacks one (this
/// machine kind has no CAP_SYS_RESOURCE) the container cannot start.
pub const DOCKER_RUN_FLAGS: &[&str] = &[
    "--rm",
    "--pid=host",
    "--network=host",
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "-v",
    "/sys:/sys",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock",
    "-v",
    "/run/netns:/run/netns",
];

/// The generated files cargo-deb packages and the tarball holds, below
/// target/release (see `[package.metadata.deb]` in tracer/Cargo.toml).
const TREE: &str = "dist-tree";

/// Where each shell looks for completions, below the prefix (/usr).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "share/bash-completion/completions/pkttrace"),
    (Shell::Zsh, "share/zsh/vendor-completions/_pkttrace"),
    (Shell::Fish, "share/fish/vendor_completions.d/pkttrace.fish"),
];

/// Shipped in both packages, from the workspace root.
const DOCS: [&str; 4] = ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// `nft` reads rulesets, `nsenter` enters namespaces for it, `dot` draws `--svg`.
const IMAGE_TOOLS: [&str; 3] = ["/usr/sbin/nft", "/usr/bin/nsenter", "/usr/bin/dot"];
/// nft prints rules that iptables-nft made through these libxtables plugins.
const XTABLES_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// nft names protocols and ports from these (`meta l4proto udp`, not `17`).
const NAME_TABLES: [&str; 2] = ["/etc/protocols", "/etc/services"];
const GRAPHVIZ_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/graphviz";
/// Layout and SVG output; the other plugins (pango, gd, X11) pull in fonts
/// and much of a desktop, and `dot -Tsvg` does without them.
const GRAPHVIZ_PLUGINS_USED: [&str; 2] = ["libgvplugin_core.so.6", "libgvplugin_dot_layout.so.6"];

pub struct Packages {
    pub deb: PathBuf,
    pub tarball: PathBuf,
}

/// Builds the release binary and writes the .deb and the tarball into
/// target/dist.
pub fn dist() -> Result<Packages> {
    let release = release_build()?;
    let tree = release.join(TREE);
    stage(&tree, &release.join("pkttrace"))?;
    let out = target_dir()?.join("dist");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let deb = out.join(format!("pkttrace_{VERSION}_amd64.deb"));
    run(cargo(["deb", "-p", "tracer", "--no-build", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target_dir()?))?;

    let tarball = out.join(format!("pkttrace-{VERSION}-x86_64-linux.tar.gz"));
    let top = format!("s,^{TREE},pkttrace-{VERSION},");
    run(cmd(
        "tar",
        ["--owner=0", "--group=0", "--numeric-owner", "--sort=name"],
    )
    .args(["--transform", &top, "-czf"])
    .arg(&tarball)
    .arg("-C")
    .arg(&release)
    .arg(TREE))?;
    Ok(Packages { deb, tarball })
}

/// Builds the release binary and the image `pkttrace:<version>`, tagged
/// `pkttrace:latest` too; returns the versioned name.
pub fn image() -> Result<String> {
    let release = release_build()?;
    let root = TempDir::create("pkttrace-image-rootfs")?;
    let root = root.path();
    root_layout(root)?;
    install_program(
        root,
        &release.join("pkttrace"),
        Path::new("/usr/bin/pkttrace"),
    )?;
    strip(&root.join("usr/bin/pkttrace"))?;
    for tool in IMAGE_TOOLS {
        install_program(root, Path::new(tool), Path::new(tool))?;
    }
    for entry in fs::read_dir(XTABLES_PLUGINS)
        .with_context(|| format!("cannot list {XTABLES_PLUGINS} (iptables' libxtables12)"))?
    {
        let plugin = entry?.path();
        install_program(root, &plugin, &plugin)?;
    }
    for table in NAME_TABLES {
        fs::copy(table, root.join(table.trim_start_matches('/')))
            .with_context(|| format!("cannot copy {table} (netbase)"))?;
    }
    for plugin in GRAPHVIZ_PLUGINS_USED {
        let plugin = Path::new(GRAPHVIZ_PLUGINS).join(plugin);
        install_program(root, &plugin, &plugin)?;
    }
    // dot finds its plugins through a config file that `dot -c` writes from
    // the plugins present: run inside the new root, it names only these.
    run(&mut cmd(
        "chroot",
        [root, Path::new("/usr/bin/dot"), Path::new("-c")],
    ))?;

    let versioned = format!("{IMAGE}:{VERSION}");
    let latest = format!("{IMAGE}:latest");
    // A rebuilt image would leave the old one behind untagged.
    remove_images(&[&versioned, &latest]);
    docker_import(root, r#"ENTRYPOINT ["/usr/bin/pkttrace"]"#, &versioned)?;
    run(&mut cmd("docker", ["tag", &versioned, &latest]))?;
    Ok(versioned)
}

/// Removes these image names, quietly: a missing one is no error.
pub fn remove_images(names: &[&str]) {
    let _ = cmd("docker", ["image", "rm"]).args(names).output();
}

/// `cargo build --release -p tracer`; returns the folder the binary is in.
fn release_build() -> Result<PathBuf> {
    let target = target_dir()?;
    // cargo runs from the workspace root: a relative CARGO_TARGET_DIR would
    // there name another folder than the one xtask reads.
    run(cargo(["build", "--release", "-p", "tracer"]).env("CARGO_TARGET_DIR", &target))?;
    Ok(target.join("release"))
}

/// Writes the tarball's tree: bin/, share/ (man pages, completions) and the
/// docs at its top; cargo-deb takes the generated files from here too.
fn stage(tree: &Path, binary: &Path) -> Result<()> {
    // Pages of a subcommand that no longer exists must not ship.
    if tree.exists() {
        fs::remove_dir_all(tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    let bin = tree.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(binary, bin.join("pkttrace"))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    strip(&bin.join("pkttrace"))?;
    for page in man::write_pages(&tree.join("share/man/man1"))? {
        // -n: no name or time stamp inside, so the same page gives the same file.
        run(cmd("gzip", ["-9nf"]).arg(&page))?;
    }
    for (shell, path) in COMPLETIONS {
        let path = tree.join(path);
        fs::create_dir_all(path.parent().context("completion path has a folder")?)?;
        let mut script = Vec::new();
        // What `pkttrace completions SHELL` prints, from the same definitions.
        clap_complete::generate(
            shell,
            &mut pkttrace_cli::Cli::command(),
            "pkttrace",
            &mut script,
        );
        fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for doc in DOCS {
        fs::copy(crate::workspace_root().join(doc), tree.join(doc))
            .with_context(|| format!("cannot copy {doc}"))?;
    }
    Ok(())
}

/// Drops the symbols only a debugger needs, as cargo-deb does for the .deb.
fn strip(binary: &Path) -> Result<()> {
    run(cmd("strip", ["--strip-unneeded"]).arg(binary))
}

/// Debian's merged /usr (bin, sbin, lib and lib64 are links into /usr), so
/// programs and libraries keep the paths they have here, plus the folders
/// Docker mounts over.
fn root_layout(root: &Path) -> Result<()> {
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib64",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "var",
        "tmp",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    for dir in ["bin", "sbin", "lib", "lib64"] {
        symlink(format!("usr/{dir}"), root.join(dir))?;
    }
    symlink("../run", root.join("var/run"))?;
    // Sticky and writable by all, as /tmp is everywhere.
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// Copies an executable or plugin to `dest` in `root`, with every shared
/// library it loads.
fn install_program(root: &Path, source: &Path, dest: &Path) -> Result<()> {
    let within = root.join(dest.strip_prefix("/").unwrap_or(dest));
    fs::create_dir_all(within.parent().context("a program lives in a folder")?)?;
    fs::copy(source, &within).with_context(|| format!("cannot copy {}", source.display()))?;
    let ldd = read(&mut cmd("ldd", [source]))?;
    for library in shared_libraries(&ldd)? {
        // The library's own folder (/lib is a link to /usr/lib here), under
        // the name the program asks for (a soname link is copied as a file).
        let folder = library.parent().context("a library lives in a folder")?;
        let folder = fs::canonicalize(folder)
            .with_context(|| format!("cannot resolve {}", folder.display()))?;
        let name = library.file_name().context("a library has a name")?;
        let copy = root.join(folder.strip_prefix("/")?).join(name);
        if !copy.exists() {
            fs::create_dir_all(copy.parent().context("a library lives in a folder")?)?;
            fs::copy(&library, &copy)
                .with_context(|| format!("cannot copy {}", library.display()))?;
        }
    }
    Ok(())
}

/// The files `ldd` says a program loads, the dynamic loader included; the
/// vDSO is the kernel's and has no file.
fn shared_libraries(ldd: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in ldd.lines().map(str::trim) {
        let path = match line.split_once(" => ") {
            Some((name, found)) => {
                let path = found.split_whitespace().next().unwrap_or_default();
                if !path.starts_with('/') {
                    bail!("ldd finds no file for {name}: {line}");
                }
                path
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::shared_libraries;

    #[test]
    fn ldd_gives_the_files_a_program_loads() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffc3c5f1000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0b51e61000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b51ecb000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0b5217c000)
";
        assert_eq!(
            shared_libraries(ldd).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_an_error() {
        let ldd = "\tlibmissing.so.3 => not found\n";
        let err = shared_libraries(ldd).unwrap_err().to_string();
        assert!(err.contains("libmissing.so.3"), "{err}");
    }
}
