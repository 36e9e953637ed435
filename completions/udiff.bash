# udiff completion for bash: source this file. It asks the installed udiff for click's script,
# so it always matches the installed click.
eval "$(_UDIFF_COMPLETE=bash_source udiff)"
COMP_WORDBREAKS=${COMP_WORDBREAKS//@/}
