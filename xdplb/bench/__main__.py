from .cli import bench_command

bench_command(prog_name="xdplb bench")
