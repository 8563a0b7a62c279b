# shellcheck shell=sh
# /etc/profile.d/attnlab-env.sh: login shells (ssh, tmux) get the container's environment
# back after /etc/profile has reset PATH. The entrypoint writes the file at every start.
if [ -r /var/lib/attnlab/run/env.sh ]; then
  # shellcheck disable=SC1091
  . /var/lib/attnlab/run/env.sh
fi
