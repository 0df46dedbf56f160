{{/*
Names, labels and small computed values shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "nexus-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>" unless the release name already contains the chart name; 63 chars max. */}}
{{- define "nexus-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value; "+" is not allowed in label values. */}}
{{- define "nexus-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "nexus-operator.labels" -}}
helm.sh/chart: {{ include "nexus-operator.chart" . }}
{{ include "nexus-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nexus-operator
{{- end }}

{{/* Stable labels only (never the version): selectors cannot change after install. */}}
{{- define "nexus-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nexus-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "nexus-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nexus-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease the operator replicas elect their status writer with (passed as --lease-name). */}}
{{- define "nexus-operator.leaseName" -}}
{{- include "nexus-operator.fullname" . }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is pinned. */}}
{{- define "nexus-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
One CRD from files/crds/ (a byte-identical copy of the repository's generated crds/), with the
chart's labels and, when crds.keep, the keep policy. Call with (dict "root" $ "file" "<name>.yaml").
*/}}
{{- define "nexus-operator.crd" -}}
{{- $root := .root }}
{{- $crd := $root.Files.Get (printf "files/crds/%s" .file) | fromYaml }}
{{- if not $crd.metadata }}
{{- fail (printf "files/crds/%s is missing or not a CRD; run `make manifests-install`" .file) }}
{{- end }}
{{- $labels := merge (include "nexus-operator.labels" $root | fromYaml) (default (dict) $crd.metadata.labels) }}
{{- $_ := set $crd.metadata "labels" $labels }}
{{- if $root.Values.crds.keep }}
{{- $annotations := merge (dict "helm.sh/resource-policy" "keep") (default (dict) $crd.metadata.annotations) }}
{{- $_ := set $crd.metadata "annotations" $annotations }}
{{- end }}
{{- toYaml $crd }}
{{- end }}

{{/*
The readiness/startup probe action. Kubelet gRPC probes speak plaintext only, so with TLS the
probe can only check that the port accepts connections.
*/}}
{{- define "nexus-operator.grpcProbe" -}}
{{- if .Values.tls.enabled }}
tcpSocket:
  port: grpc
{{- else }}
grpc:
  port: {{ .Values.grpc.port }}
{{- end }}
{{- end }}

{{/*
The name the gRPC server certificate is issued for: tls.serverName, else the Service's
in-cluster DNS name. The helm test and the NOTES' client commands verify it.
*/}}
{{- define "nexus-operator.tlsServerName" -}}
{{- default (printf "%s.%s.svc" (include "nexus-operator.fullname" .) .Release.Namespace) .Values.tls.serverName }}
{{- end }}

{{/*
The chart's CRDs that exist in the cluster but are not this release's (no Helm ownership, or
another release's), as a JSON array of names. The chart leaves those alone, so installing after
`kubectl apply -f crds/` works. Empty under `helm template` (lookup sees no cluster).
*/}}
{{- define "nexus-operator.foreignCrds" -}}
{{- $foreign := list }}
{{- range $path, $_ := .Files.Glob "files/crds/*.yaml" }}
{{- $name := (($.Files.Get $path | fromYaml).metadata).name }}
{{- $live := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" $name }}
{{- if $live }}
{{- $annotations := default (dict) $live.metadata.annotations }}
{{- $release := get $annotations "meta.helm.sh/release-name" }}
{{- $namespace := get $annotations "meta.helm.sh/release-namespace" }}
{{- if not (and (eq $release $.Release.Name) (eq $namespace $.Release.Namespace)) }}
{{- $foreign = append $foreign $name }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $foreign }}
{{- end }}
