# Sourced by arm64_check.sh and pi_cost.sh: cpuinfo_lines CPU prints what /proc/cpuinfo says on
# the Raspberry Pi with that CPU (cortex-a72: Pi 4, cortex-a76: Pi 5). ai-edge-litert's CPU probe
# reads it and crashes on the x86 one that qemu-user would otherwise pass through; the Features
# line is what makes XNNPACK pick the A76's dot-product kernels.
cpuinfo_lines() {
    local features variant part revision model cpu
    case $1 in
        cortex-a72) features="fp asimd evtstrm crc32 cpuid"; variant=0x0; part=0xd08; revision=3
                    model="Raspberry Pi 4 Model B Rev 1.4" ;;
        cortex-a76) features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
                    variant=0x4; part=0xd0b; revision=1; model="Raspberry Pi 5 Model B Rev 1.0" ;;
        *) return 1 ;;
    esac
    for ((cpu = 0; cpu < $(nproc); cpu++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$cpu" "$features"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
    done
    printf 'Model\t\t: %s\n' "$model"
}
