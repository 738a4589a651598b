"""``patchnet micro create-project | build | flash``: the board project API from the command line."""

from __future__ import annotations

import argparse

from .common import add_board_arg, add_memory_map_arg


def add_parser(sub) -> None:
    p = sub.add_parser("micro", help="board projects: create-project, build, flash; serve (a tuning worker)")
    msub = p.add_subparsers(dest="micro_command", metavar="ACTION")
    msub.required = True
    c = msub.add_parser("create-project", help="a board project around a compiled model",
                        description="Write a board project (Makefile, firmware, the model's C) for a compiled model.")
    c.add_argument("archive", help="model.tar or directory from 'patchnet compile'")
    c.add_argument("project_dir", help="the project folder to create (new or empty)")
    add_board_arg(c, "board to build for (default: the board the model was compiled for)")
    add_memory_map_arg(c)
    c.set_defaults(drive=drive_create)
    b = msub.add_parser("build", help="build a project's firmware (.elf) and report its memory",
                        description="Build a project's firmware with make and report its flash and SRAM.")
    b.add_argument("project_dir", help="a folder from 'patchnet micro create-project'")
    b.set_defaults(drive=drive_build)
    f = msub.add_parser("flash", help="flash a Nucleo board (openocd or st-flash); QEMU needs none",
                        description="Flash a built Nucleo project's firmware (openocd, else st-flash).")
    f.add_argument("project_dir", help="a built project folder")
    f.set_defaults(drive=drive_flash)
    s = msub.add_parser("serve", help="a tuning worker: measure candidates for 'patchnet tune --rpc-tracker'",
                        description="Register at a TVM RPC tracker (python -m tvm.exec.rpc_tracker) and build and run "
                                    "the tuning candidates it hands over on this machine's board (QEMU, or the "
                                    "attached Nucleo), until Ctrl-C. TVM's RPC trusts its network: serve on "
                                    "loopback or a private network only.")
    s.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the RPC tracker to register at")
    s.add_argument("--key", default="qemu-m4", help="the key tuners ask for (default qemu-m4: the board's name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=9091, help="first port to try (default 9091; the next 99 too)")
    s.set_defaults(drive=drive_serve)


def drive_create(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from .. import micro
    from ..archive import read_archive

    with tempfile.TemporaryDirectory(prefix="patchnet-project-") as tmp:
        meta = read_archive(args.archive, os.path.join(tmp, "model"))
        micro.create_project(os.path.join(tmp, "model", "codegen", "host", "src"), args.board or meta["board"],
                             args.project_dir, memory_map=args.memory_map)
    print(f"project {args.project_dir} for {args.board or meta['board']}")
    return 0


def drive_build(args: argparse.Namespace) -> int:
    from .. import micro

    print(micro.build(args.project_dir).summary())
    return 0


def drive_flash(args: argparse.Namespace) -> int:
    from .. import micro

    micro.flash(args.project_dir)
    print(f"flashed {args.project_dir}")
    return 0


def drive_serve(args: argparse.Namespace) -> int:
    from ..tune.workers import serve

    serve(args.tracker, args.key, args.host, args.port)
    return 0
