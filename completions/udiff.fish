# udiff completion for fish: source this file. It asks the installed udiff for click's script,
# so it always matches the installed click.
_UDIFF_COMPLETE=fish_source udiff | source
