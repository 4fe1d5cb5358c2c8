from fcnet.cli import run

run()
