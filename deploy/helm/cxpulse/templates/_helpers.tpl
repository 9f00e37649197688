{{/* Names and labels. */}}
{{- define "cxpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cxpulse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "cxpulse.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cxpulse.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cxpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cxpulse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cxpulse.labels" -}}
{{ include "cxpulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The release's name on Kafka, the default of kafka.group_id and client_id:
<namespace>.<full name>, unique per release in a cluster, so two releases
(in one namespace or two) never share a consumer group or changelog.
*/}}
{{- define "cxpulse.kafkaName" -}}
{{- printf "%s.%s" .Release.Namespace (include "cxpulse.fullname" .) -}}
{{- end -}}

{{/* The scrape job of the release's targets: monitoring.job or the full name. */}}
{{- define "cxpulse.job" -}}
{{- default (include "cxpulse.fullname" .) .Values.monitoring.job -}}
{{- end -}}

{{/* PromQL label matchers of the release's series. */}}
{{- define "cxpulse.seriesMatchers" -}}
{{- printf "namespace=%s, job=%s" (toJson .Release.Namespace) (toJson (include "cxpulse.job" .)) -}}
{{- end -}}

{{- define "cxpulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cxpulse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cxpulse.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where mounted Secrets appear in the container. */}}
{{- define "cxpulse.secretsDir" -}}/var/run/secrets/cxpulse{{- end -}}

{{/*
The effective cxpulse.toml content as a dict: .Values.config with the
release's Kafka names where they are empty (kafka.group_id, kafka.client_id,
topics.changelog), plus what the chart owns (the HTTP listener on the
container port, TLS file locations).
*/}}
{{- define "cxpulse.configDict" -}}
{{- $config := deepCopy .Values.config -}}
{{- $kafka := get $config "kafka" | default dict -}}
{{- $topics := get $config "topics" | default dict -}}
{{- if not $kafka.group_id }}{{ $_ := set $kafka "group_id" (include "cxpulse.kafkaName" .) }}{{ end -}}
{{- if not $kafka.client_id }}{{ $_ := set $kafka "client_id" (include "cxpulse.kafkaName" .) }}{{ end -}}
{{- if not $topics.changelog }}{{ $_ := set $topics "changelog" (printf "%s.state-changelog" $kafka.group_id) }}{{ end -}}
{{- $_ := set $config "kafka" $kafka -}}
{{- $_ := set $config "topics" $topics -}}
{{- $owned := dict "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.service.port))) -}}
{{- with .Values.secrets.kafkaTls -}}
{{- if .secretName -}}
{{- $dir := printf "%s/kafka-tls" (include "cxpulse.secretsDir" $) -}}
{{- $properties := dict -}}
{{- if .caKey }}{{ $_ := set $properties "ssl.ca.location" (printf "%s/%s" $dir .caKey) }}{{ end -}}
{{- if .certificateKey }}{{ $_ := set $properties "ssl.certificate.location" (printf "%s/%s" $dir .certificateKey) }}{{ end -}}
{{- if .keyKey }}{{ $_ := set $properties "ssl.key.location" (printf "%s/%s" $dir .keyKey) }}{{ end -}}
{{- $_ := set $owned "kafka" (dict "properties" $properties) -}}
{{- end -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $config $owned) -}}
{{- end -}}

{{/* A TOML key: bare when it may be, else quoted. */}}
{{- define "cxpulse.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* A TOML value: string, boolean, integer, float or array of them. */}}
{{- define "cxpulse.toml.value" -}}
{{- if kindIs "string" . -}}{{ toJson . }}
{{- else if kindIs "bool" . -}}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) -}}
{{- if eq (float64 .) (floor .) -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if kindIs "slice" . -}}[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "cxpulse.toml.value" $e }}{{ end }}]
{{- else -}}{{ fail (printf "config: %v cannot be written as a TOML value" .) }}
{{- end -}}
{{- end -}}

{{- define "cxpulse.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) (kindIs "map" (first .)) -}}true{{- end -}}
{{- end -}}

{{/* A TOML table body: its scalar keys, then its sub-tables and arrays of tables. */}}
{{- define "cxpulse.toml.table" -}}
{{- $path := .path -}}
{{- range $key, $value := .table }}
{{- if not (or (kindIs "map" $value) (include "cxpulse.toml.isTableArray" $value)) }}
{{ include "cxpulse.toml.key" $key }} = {{ include "cxpulse.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- $sub := include "cxpulse.toml.key" $key }}
{{- if $path }}{{ $sub = printf "%s.%s" $path $sub }}{{ end }}
{{- if kindIs "map" $value }}

[{{ $sub }}]
{{- include "cxpulse.toml.table" (dict "path" $sub "table" $value) }}
{{- else if include "cxpulse.toml.isTableArray" $value }}
{{- range $value }}

[[{{ $sub }}]]
{{- include "cxpulse.toml.table" (dict "path" $sub "table" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Durations such as "45s" or "2m" in seconds; 0 when not that simple. */}}
{{- define "cxpulse.seconds" -}}
{{- $d := toString . -}}
{{- if regexMatch "^[0-9]+s$" $d -}}{{ trimSuffix "s" $d }}
{{- else if regexMatch "^[0-9]+m$" $d -}}{{ mul (trimSuffix "m" $d | int) 60 }}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* Refuses values that would deploy something broken, with the reason. */}}
{{- define "cxpulse.validate" -}}
{{- /*
Kubernetes 1.25 or newer: the version the chart is validated against and
written for (restricted Pod Security admission is GA from 1.25). Not a
Chart.yaml kubeVersion, which Helm also checks against its built-in default
when no cluster is asked; that default, v1.20.0 in helm built without
version flags (`go install`), is let through so that a plain `helm template`
renders (a real 1.20 cluster would refuse the policy/v1 PodDisruptionBudget).
*/ -}}
{{- $kube := .Capabilities.KubeVersion.Version -}}
{{- if and (ne $kube "v1.20.0") (semverCompare "<1.25.0-0" $kube) -}}
{{- fail (printf "Kubernetes %s is older than 1.25, the oldest version this chart supports" $kube) -}}
{{- end -}}
{{- $partitions := int .Values.partitions -}}
{{- if and (not .Values.keda.enabled) (gt (int .Values.replicas) $partitions) -}}
{{- fail (printf "replicas (%d) exceeds partitions (%d): one task per input partition, so the extra pods would stay idle and never become ready" (int .Values.replicas) $partitions) -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- if gt (int .Values.keda.maxReplicaCount) $partitions -}}
{{- fail (printf "keda.maxReplicaCount (%d) exceeds partitions (%d): replicas beyond the input partition count stay idle" (int .Values.keda.maxReplicaCount) $partitions) -}}
{{- end -}}
{{- if gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount) -}}
{{- fail "keda.minReplicaCount exceeds keda.maxReplicaCount" -}}
{{- end -}}
{{- end -}}
{{- $kafka := .Values.config.kafka | default dict -}}
{{- range $forbidden := list "sasl_password" "group_instance_id" -}}
{{- if hasKey $kafka $forbidden -}}
{{- fail (printf "config.kafka.%s is not set through values: %s" $forbidden (ternary "use secrets.kafkaSaslPassword (an existing Secret)" "each pod joins with its own name (staticMembership)" (eq $forbidden "sasl_password"))) -}}
{{- end -}}
{{- end -}}
{{- range $map := list "properties" "consumer" "producer" -}}
{{- range $name, $_ := (get $kafka $map | default dict) -}}
{{- if or (contains "password" $name) (contains "secret" $name) -}}
{{- fail (printf "config.kafka.%s.%q looks like a secret; cxpulse refuses secrets in its config file: mount an existing Secret (secrets.*) or use extraEnv with valueFrom.secretKeyRef" $map $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $changelog := dig "topics" "changelog" "" (include "cxpulse.configDict" . | fromYaml) -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]{1,249}$" $changelog) -}}
{{- fail (printf "topics.changelog %q is not a valid Kafka topic name (at most 249 of A-Z a-z 0-9 . _ -): set config.topics.changelog, or a config.kafka.group_id it can derive <group_id>.state-changelog from" $changelog) -}}
{{- end -}}
{{- if hasKey (.Values.config.http | default dict) "api_token" -}}
{{- fail "config.http.api_token is a secret: use secrets.apiToken (an existing Secret)" -}}
{{- end -}}
{{- $shutdown := include "cxpulse.seconds" (dig "processing" "shutdown_timeout" "30s" .Values.config) | int -}}
{{- if le (int .Values.terminationGracePeriodSeconds) $shutdown -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed processing.shutdown_timeout (%ds), or the kubelet kills cxpulse mid-drain" (int .Values.terminationGracePeriodSeconds) $shutdown) -}}
{{- end -}}
{{- end -}}
