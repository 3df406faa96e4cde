//! The subcommands, one module each; [`run`] dispatches the command line to them.

mod archive;
pub(crate) mod build;
mod convert;
mod images;
mod import;
mod inspect;
mod login;
mod prune;
pub(crate) mod pull;
pub(crate) mod push;
mod rmi;
mod tag;
mod unpack;

use anyhow::bail;

use crate::ctx::Ctx;
use crate::{Cli, Command};

/// Run the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::open(&cli)?;
    let command = match cli.command {
        Some(c) => c,
        None if cli.build.images.is_empty()
            && cli.build.context.is_none()
            && cli.build.context_pos.is_none()
            && cli.build.file.is_none() =>
        {
            bail!(
                "nothing to do: give a subcommand (see --help) or the build short form -c CONTEXT -f DOCKERFILE -i IMAGE"
            );
        }
        None => Command::Build(cli.build.clone()),
    };
    match command {
        Command::Build(args) => build::build(&ctx, &args).await,
        Command::Push {
            image,
            dest,
            transfer,
        } => {
            let digest = push::push(&ctx, &image, dest.as_deref(), &transfer).await?;
            println!("{digest}");
            Ok(())
        }
        Command::Pull {
            image,
            platform,
            transfer,
        } => {
            let (_, digest) = pull::pull(&ctx, &image, platform.as_deref(), &transfer).await?;
            println!("{digest}");
            Ok(())
        }
        Command::Login {
            registry,
            username,
            password,
            password_stdin,
        } => login::login(&ctx, &registry, username, password, password_stdin).await,
        Command::Logout { registry } => login::logout(&ctx, &registry),
        Command::Images { digests, json } => images::images(&ctx, digests, json),
        Command::Tag { source, target } => tag::tag(&ctx, &source, &target),
        Command::Rmi { images } => rmi::rmi(&ctx, &images),
        Command::Inspect {
            image,
            remote,
            platform,
        } => inspect::inspect(&ctx, &image, remote, platform.as_deref()).await,
        Command::Save {
            images,
            output,
            format,
        } => archive::save(&ctx, &images, &output, &format).await,
        Command::Load { input } => archive::load(&ctx, &input).await,
        Command::Unpack { image, dir } => unpack::unpack(&ctx, &image, &dir).await,
        Command::Import {
            tarball,
            image,
            compression,
            format,
            platform,
            cmd,
        } => {
            import::import(
                &ctx,
                tarball,
                &image,
                &compression,
                &format,
                platform.as_deref(),
                cmd,
            )
            .await
        }
        Command::Convert {
            estargz: _,
            source,
            dest,
            format,
        } => convert::convert(&ctx, &source, &dest, &format).await,
        Command::Prune => prune::prune(&ctx),
    }
}
