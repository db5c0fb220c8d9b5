# The chart of scripts/bench.sh: four panels of clustered bars (skiff, runc,
# crun) with standard-deviation error bars.
#   gnuplot -e "datadir='DIR'; out='FILE.png'; subtitle='...'; \
#               n_single=N; n_concurrent=N; n_shim=N; n_memory=N" chart.gp
# DIR holds single.dat, concurrent.dat, shim.dat and memory.dat, each line:
# "label" skiff sd runc sd crun sd ("?" where a runtime has no value); n_* are
# their line counts (a panel with no line says so instead of failing).

set terminal pngcairo size 1400,1000 font "DejaVu Sans,10"
set output out
set datafile missing "?"
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left
set yrange [0:*]
set xtics rotate by 20 right nomirror
set linetype 1 lc rgb "#d95f02"
set linetype 2 lc rgb "#1b9e77"
set linetype 3 lc rgb "#7570b3"

bars(f) = sprintf("%s/%s", datadir, f)
# A panel with a sentence instead of bars.
EMPTY = "unset xtics; unset ytics; set xrange [0:1]; set yrange [0:1]; \
    set label 1 'not measured (see the notes in bench/README.md)' at graph 0.5, 0.5 center; \
    plot 2 notitle; \
    unset label 1; set xtics rotate by 20 right nomirror; set ytics; set autoscale x; set yrange [0:*]"

set multiplot layout 2,2 title "skiff vs runc vs crun (lower is better)\n".subtitle font ",13"

set title "one container (ms)"
set ylabel "ms"
if (n_single > 0) {
    plot bars("single.dat") using 2:3:xtic(1) title "skiff", \
         '' using 4:5 title "runc", \
         '' using 6:7 title "crun"
} else { eval EMPTY }

set title "N concurrent creates, then deletes (wall ms)"
if (n_concurrent > 0) {
    plot bars("concurrent.dat") using 2:3:xtic(1) title "skiff", \
         '' using 4:5 title "runc", \
         '' using 6:7 title "crun"
} else { eval EMPTY }

set title "ctr run --rm /bin/true through the shim (ms)"
if (n_shim > 0) {
    plot bars("shim.dat") using 2:3:xtic(1) title "skiff shim + skiff", \
         '' using 4:5 title "runc shim + runc"
} else { eval EMPTY }

set title "memory (MiB): runtime peak RSS of create; shim per pod"
set ylabel "MiB"
if (n_memory > 0) {
    plot bars("memory.dat") using 2:3:xtic(1) title "skiff", \
         '' using 4:5 title "runc", \
         '' using 6:7 title "crun"
} else { eval EMPTY }

unset multiplot
