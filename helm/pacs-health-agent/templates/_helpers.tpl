{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "pha.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release fullname. Kept at most 52 characters so StatefulSet pod names and the controller
revision label stay within 63. */}}
{{- define "pha.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pha.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pha.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pha.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pha.labels" -}}
helm.sh/chart: {{ include "pha.chart" . }}
{{ include "pha.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: pacs-health-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pha.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pha.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pha.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the agents are sharded: a StatefulSet, one shard per pod ordinal. */}}
{{- define "pha.sharded" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{- define "pha.headlessServiceName" -}}
{{- printf "%s-headless" (include "pha.fullname" .) -}}
{{- end -}}

{{/* The Secret that supplies environment variables, or "" when there is none. */}}
{{- define "pha.envSecretName" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else if .Values.secretEnv -}}
{{- printf "%s-env" (include "pha.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Refuses a literal secret in the config. Walks dicts and lists; a string under a secret-like key
must be empty or contain a ${VAR} placeholder. Called with (dict "v" VALUE "path" PATH "key" KEY). */}}
{{- define "pha.checkNoSecrets" -}}
{{- $secretKey := "(?i)^(password|passwd|passphrase|keypassword|key[-_]password|secret|clientsecret|client[-_]secret|token|accesstoken|access[-_]token|bearertoken|apikey|api[-_]key|x-api-key|authorization|private[-_]?key)$" -}}
{{- if kindIs "map" .v -}}
{{- range $k, $v := .v -}}
{{- include "pha.checkNoSecrets" (dict "v" $v "path" (printf "%s.%s" $.path $k) "key" $k) -}}
{{- end -}}
{{- else if kindIs "slice" .v -}}
{{- range $i, $v := .v -}}
{{- include "pha.checkNoSecrets" (dict "v" $v "path" (printf "%s[%d]" $.path $i) "key" "") -}}
{{- end -}}
{{- else if and (kindIs "string" .v) (regexMatch $secretKey .key) -}}
{{- if and .v (not (regexMatch "\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}" .v)) -}}
{{- fail (printf "%s holds a literal secret: write it as ${VAR} and provide VAR through existingSecret or secretEnv" .path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The effective agent config: values' config; with otlp.enabled, agent.otlp gets enabled, endpoint,
protocol, interval (and headers if any) from the otlp values, its other keys kept. */}}
{{- define "pha.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if .Values.otlp.enabled -}}
{{- $agent := dict -}}
{{- if and (hasKey $cfg "agent") (kindIs "map" $cfg.agent) -}}{{- $agent = $cfg.agent -}}{{- end -}}
{{- $otlp := dict -}}
{{- if and (hasKey $agent "otlp") (kindIs "map" $agent.otlp) -}}{{- $otlp = $agent.otlp -}}{{- end -}}
{{- $_ := set $otlp "enabled" true -}}
{{- $_ := set $otlp "endpoint" .Values.otlp.endpoint -}}
{{- $_ := set $otlp "protocol" .Values.otlp.protocol -}}
{{- $_ := set $otlp "interval" .Values.otlp.interval -}}
{{- if .Values.otlp.headers -}}{{- $_ := set $otlp "headers" .Values.otlp.headers -}}{{- end -}}
{{- $_ := set $agent "otlp" $otlp -}}
{{- $_ := set $cfg "agent" $agent -}}
{{- end -}}
{{- include "pha.checkNoSecrets" (dict "v" $cfg "path" "config" "key" "") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Alert rule groups of every files/alerts/*.yml|yaml that has a top-level "groups" key. */}}
{{- define "pha.alertGroups" -}}
{{- $groups := list -}}
{{- range $path, $_ := .Files.Glob "files/alerts/*.{yml,yaml}" -}}
{{- $doc := include "pha.runbookLinks" (dict "text" ($.Files.Get $path) "root" $) | fromYaml -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "%s: %s" $path $doc.Error) -}}
{{- end -}}
{{- if hasKey $doc "groups" -}}
{{- $groups = concat $groups $doc.groups -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "groups" $groups) -}}
{{- end -}}

{{/*
Alert rules and dashboards link to docs/runbooks.md (relative). With runbookBaseURL set, those
links point at that URL instead: runbook_url annotations keep their #anchor, the dashboards'
"Runbooks" link is the page itself.
*/}}
{{- define "pha.runbookLinks" -}}
{{- $base := .root.Values.runbookBaseURL | default "" -}}
{{- if $base -}}
{{- .text | replace "runbook_url: docs/runbooks.md" (printf "runbook_url: %s" $base) | replace "\"url\": \"docs/runbooks.md\"" (printf "\"url\": %s" (toJson $base)) -}}
{{- else -}}
{{- .text -}}
{{- end -}}
{{- end -}}

{{/* Worker processes per pod: .Values.workers, or the CPU limit (else request) rounded down to
whole CPUs, at least 1. CPU quantities: 2, 1.5, "1500m". */}}
{{- define "pha.workers" -}}
{{- if .Values.workers -}}
{{- int .Values.workers -}}
{{- else -}}
{{- $res := .Values.resources | default dict -}}
{{- $cpu := dig "limits" "cpu" "" $res | default (dig "requests" "cpu" "" $res) | toString -}}
{{- $milli := 0 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $milli = trimSuffix "m" $cpu | int -}}
{{- else if $cpu -}}
{{- $milli = mulf (float64 $cpu) 1000 | int -}}
{{- end -}}
{{- max 1 (div $milli 1000) -}}
{{- end -}}
{{- end -}}
