# bash completion for dlock(1)                               -*- shell-script -*-
#
# Installed as share/bash-completion/completions/dlock; bash-completion loads
# it the first time `dlock <TAB>` is pressed. Without bash-completion:
#   source /path/to/dlock.bash
#
# Completes the global options, the commands, each command's options (the
# actions of `latch`), URL schemes after -u, files after --password-file and --metrics-file, the
# command and its arguments after `run ... --` and `elect ... --`, and KEYs:
# the keys of the locks that are held or waited for right now, read with
# `dlock metrics` from the same server (the -u, --prefix and
# --password-file given on the line, else $DLOCK_URL ...), bounded to 2s so
# an unreachable server never hangs the shell. A free key is not in Redis,
# so it cannot be offered.

# The keys under the prefix that start with $1, one per line, from
# `dlock metrics` (label key="...", Prometheus-escaped).
_dlock_keys()
{
    local prefix=$1 out
    local -a cmd=("${_dlock_prog}" "${_dlock_globals[@]}" --connect-timeout 1s metrics --)
    # A glob in what was typed is the user's; otherwise match as a prefix.
    case $prefix in
        *[*?[]*) cmd+=("$prefix") ;;
        *) cmd+=("$(printf '%s' "$prefix" | sed 's/[][*?\\]/\\&/g')*") ;;
    esac
    if command -v timeout >/dev/null 2>&1; then
        out=$(timeout 2 "${cmd[@]}" 2>/dev/null) || return 0
    else
        out=$("${cmd[@]}" 2>/dev/null) || return 0
    fi
    printf '%s\n' "$out" |
        sed -n 's/^dlock_lock_holders{key="\(.*\)",kind="[a-z]*"} .*$/\1/p' |
        sed 's/\\"/"/g; s/\\\\/\\/g' | sort -u
}

_dlock()
{
    local cur prev words cword delegated=0
    if declare -F _init_completion >/dev/null 2>&1; then
        # keep "--url=redis://h:6379" and "payment:42" one word each
        _init_completion -n =: || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    _dlock_main
    # readline replaces only what follows the last ':' of the word: drop
    # what is before it from the candidates (keys such as payment:42).
    if [ "$delegated" = 0 ] && [[ $cur == *:* ]] &&
        declare -F __ltrim_colon_completions >/dev/null 2>&1; then
        __ltrim_colon_completions "$cur"
    fi
}

# The completion itself; sets COMPREPLY from cur, prev, words and cword.
_dlock_main()
{
    local commands="run elect leader status unlock metrics top latch barrier help"
    local global_opts="-u --url --prefix --id --password-file --connect-timeout -q --quiet
                       -h --help -V --version"
    local _dlock_prog=${words[0]}
    local -a _dlock_globals=()
    local i=1 command="" cmd_at=0

    # The global options before COMMAND: kept for the key lookup.
    while [ "$i" -lt "$cword" ]; do
        case ${words[i]} in
            -u | --url | --prefix | --password-file)
                _dlock_globals+=("${words[i]}" "${words[i + 1]}")
                i=$((i + 2))
                ;;
            --id | --connect-timeout) i=$((i + 2)) ;;
            --url=* | --prefix=* | --password-file=*)
                _dlock_globals+=("${words[i]}")
                i=$((i + 1))
                ;;
            -*) i=$((i + 1)) ;;
            *)
                command=${words[i]}
                cmd_at=$i
                break
                ;;
        esac
    done

    if [ -z "$command" ]; then
        case $prev in
            -u | --url)
                COMPREPLY=($(compgen -W "redis:// rediss:// unix:// redis-sentinel://
                                         redis-cluster://" -- "$cur"))
                compopt -o nospace 2>/dev/null
                return
                ;;
            --password-file)
                COMPREPLY=($(compgen -f -- "$cur"))
                return
                ;;
            --id | --prefix | --connect-timeout) return ;;
        esac
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    # After `run ... --` or `elect ... --`: CMD and its own completion.
    local j
    if [ "$command" = run ] || [ "$command" = elect ]; then
        for ((j = cmd_at + 1; j < cword; j++)); do
            if [ "${words[j]}" = -- ]; then
                delegated=1
                if declare -F _command_offset >/dev/null 2>&1; then
                    _command_offset $((j + 1))
                else
                    COMPREPLY=($(compgen -c -- "$cur"))
                fi
                return
            fi
        done
    fi

    local opts="" value_opts=""
    case $command in
        run)
            opts="--ttl --wait --no-wait --grace --conflict-exit-code --limit --permits --rate
                  --shared --metrics-file --help"
            value_opts="--ttl --wait --grace --conflict-exit-code --limit --permits --rate
                        --metrics-file"
            ;;
        elect)
            opts="--ttl --wait --no-wait --grace --conflict-exit-code --metrics-file --help"
            value_opts="--ttl --wait --grace --conflict-exit-code --metrics-file"
            ;;
        leader) opts="--watch --json --help" ;;
        status) opts="--json --help" ;;
        unlock) opts="--force --help" ;;
        metrics)
            opts="--listen --help"
            value_opts="--listen"
            ;;
        top)
            opts="--interval --iterations --help"
            value_opts="--interval --iterations -n"
            ;;
        latch | barrier)
            # their keys are not locks: `dlock metrics` cannot offer them
            if [ "$command" = latch ] && [ "$cword" -eq $((cmd_at + 1)) ] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "init down wait get" -- "$cur"))
                return
            fi
            case $prev in --ttl | --wait) return ;; esac
            [[ $cur == -* ]] || return
            if [ "$command" = latch ]; then
                COMPREPLY=($(compgen -W "--ttl --wait --help" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "--wait --help" -- "$cur"))
            fi
            return
            ;;
        help)
            [ "$cword" -eq $((cmd_at + 1)) ] &&
                COMPREPLY=($(compgen -W "${commands% help}" -- "$cur"))
            return
            ;;
        *) return ;;
    esac

    case $prev in
        --metrics-file)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
    esac
    case " $value_opts " in
        *" $prev "*) return ;; # a duration, a number, an address: typed by hand
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    local IFS=$'\n'
    case $cur in
        *[*?[]*) COMPREPLY=($(_dlock_keys "$cur")) ;; # a glob: what it matches
        *) COMPREPLY=($(compgen -W "$(_dlock_keys "$cur")" -- "$cur")) ;;
    esac
    if [ "$command" = run ] || [ "$command" = elect ]; then
        # KEYs end with `--` before CMD: offer it once a key is there.
        [ "$cword" -gt $((cmd_at + 1)) ] && [ -z "$cur" ] && COMPREPLY+=(--)
    fi
}

complete -F _dlock dlock
